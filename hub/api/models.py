"""Request bodies, as msgspec Structs named after Semaphore's API definitions.

Unknown fields are ignored (Semaphore's UI and scripts send more than we use); a missing
required field or a wrong type is a 400 that names the field.
"""

from typing import Annotated, Literal

import msgspec

# Numbers end up in SQLite INTEGER columns (64-bit signed): a bigger one would not even reach
# the database (OverflowError), so it is a 400 naming the field here.
INT64_MAX = 2**63 - 1
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Id = Annotated[int, msgspec.Meta(ge=1, le=INT64_MAX)]
Count = Annotated[int, msgspec.Meta(ge=0, le=INT64_MAX)]

App = Literal["ansible", "terraform", "tofu", "bash", "python", "powershell", "pulumi"]


class Login(msgspec.Struct):
    auth: Name
    password: str


class ProjectRequest(msgspec.Struct):
    name: Name
    alert: bool = False
    alert_chat: str = ""
    max_parallel_tasks: Count = 0
    type: str = ""
    demo: bool = False


class LoginPassword(msgspec.Struct):
    login: str = ""
    password: str = ""


class SshKey(msgspec.Struct):
    login: str = ""
    passphrase: str = ""
    private_key: str = ""


class AccessKeyRequest(msgspec.Struct):
    name: Name
    type: Literal["none", "ssh", "login_password"] = "none"
    override_secret: bool = False
    login_password: LoginPassword | None = None
    ssh: SshKey | None = None


class RepositoryRequest(msgspec.Struct):
    name: Name
    git_url: Name
    git_branch: str = ""
    ssh_key_id: Id | None = None


class InventoryRequest(msgspec.Struct):
    name: Name
    type: Literal["static", "static-yaml", "file", "terraform-workspace"] = "static"
    inventory: str = ""
    ssh_key_id: Id | None = None
    become_key_id: Id | None = None
    repository_id: Id | None = None


class EnvironmentSecretRequest(msgspec.Struct):
    name: str = ""
    secret: str = ""
    type: Literal["env", "var"] = "env"
    operation: Literal["create", "update", "delete"] = "create"
    id: Id | None = None


class EnvironmentRequest(msgspec.Struct):
    name: Name
    password: str = ""
    json: str = "{}"
    env: str = "{}"
    secrets: list[EnvironmentSecretRequest] = []


class TemplateVault(msgspec.Struct):
    """Semaphore's TemplateVault: a vault password from an access key (`password`), or a
    script in the repository that prints it (`script`)."""

    id: Id | None = None
    name: str = ""  # the vault id; empty: `default`
    type: Literal["password", "script"] = "password"
    vault_key_id: Id | None = None
    script: str = ""


# Semaphore's survey variable types: "" a string, `int` an integer, `enum` one of `values`,
# `secret` a string kept out of the task's JSON; `text` (its newer multi-line string) too.
SurveyVarType = Literal["", "int", "enum", "secret", "text"]


class SurveyVarValue(msgspec.Struct):
    """One choice of an `enum` survey variable: shown as `name`, passed on as `value`."""

    name: str = ""
    value: str = ""


# A survey variable reaches a script as the word `name=value`: a name starting with `-`
# would make it an option of the program, one with `=` or white space an ambiguous word.
SurveyName = Annotated[str, msgspec.Meta(min_length=1, max_length=255,
                                         pattern=r"^[^-=\s][^=\s]*$")]


class SurveyVar(msgspec.Struct):
    """Semaphore's SurveyVar: a variable the run dialog asks for, passed to the task as an
    extra var named `name`."""

    name: SurveyName
    title: str = ""
    description: str = ""
    type: SurveyVarType = ""
    required: bool = False
    values: list[SurveyVarValue] | None = None
    default_value: str = ""


StrList = Annotated[list[str], msgspec.Meta(max_length=1000)]


class TemplateTaskParams(msgspec.Struct, omit_defaults=True):
    """Semaphore's template task_params: what a task may override and the defaults it gets,
    per app (ansible: AnsibleTemplateParams; terraform and tofu: TerraformTemplateParams).
    A field left out stays out (None), so the stored object is what the client sent."""

    allow_debug: bool | None = None
    allow_override_inventory: bool | None = None
    allow_override_limit: bool | None = None
    allow_override_tags: bool | None = None
    allow_override_skip_tags: bool | None = None
    limit: StrList | None = None
    tags: StrList | None = None
    skip_tags: StrList | None = None
    allow_destroy: bool | None = None
    allow_auto_approve: bool | None = None
    auto_approve: bool | None = None
    override_backend: bool | None = None
    backend_filename: str | None = None


class TemplateRequest(msgspec.Struct):
    name: Name
    app: App = "ansible"
    playbook: str = ""
    arguments: str | None = "[]"
    description: str = ""
    git_branch: str = ""
    repository_id: Id | None = None
    inventory_id: Id | None = None
    environment_id: Id | None = None
    allow_override_args_in_task: bool = False
    allow_override_branch_in_task: bool = False
    type: Literal["", "build", "deploy"] = ""
    runner_tag: str = ""
    timeout_sec: Count = 0  # beyond Semaphore: the task is ended `error` after this long
    vaults: list[TemplateVault] | None = None
    view_id: Id | None = None  # Semaphore's view (group of templates) it is shown in
    # None (left out) on an update keeps what is stored, as `vaults`.
    survey_vars: Annotated[list[SurveyVar], msgspec.Meta(max_length=200)] | None = None
    task_params: TemplateTaskParams | None = None
    allow_parallel_tasks: bool = False
    suppress_success_alerts: bool = False
    # Semaphore's build/deploy templates: run after a build (autorun), the first version a
    # build gets (start_version), the build template a deploy takes its version from.
    autorun: bool = False
    start_version: str | None = None
    build_template_id: Id | None = None


class ViewRequest(msgspec.Struct):
    """Semaphore's view: a named tab of templates, ordered by position."""
    title: Name
    position: Count = 0


class TaskParams(msgspec.Struct, omit_defaults=True):
    """Semaphore's task `params` (AnsibleTaskParams, TerraformTaskParams): the task's flags
    and, where its template allows, its own limit, tags and skip_tags."""

    debug: bool | None = None
    debug_level: Annotated[int, msgspec.Meta(ge=0, le=4)] | None = None
    dry_run: bool | None = None
    diff: bool | None = None
    limit: StrList | None = None
    tags: StrList | None = None
    skip_tags: StrList | None = None
    plan: bool | None = None
    destroy: bool | None = None
    auto_approve: bool | None = None
    upgrade: bool | None = None
    reconfigure: bool | None = None


class TaskRequest(msgspec.Struct):
    template_id: Id
    # Semaphore's task `secret`: a JSON object of the survey's secret variables' values,
    # used for the run and never shown back.
    secret: str = ""
    params: TaskParams | None = None
    debug: bool = False
    dry_run: bool = False
    diff: bool = False
    playbook: str = ""
    environment: str = ""
    limit: str = ""
    git_branch: str = ""
    # Semaphore's task commit_hash: the commit to run, where the branch may be chosen.
    commit_hash: str = ""
    message: str = ""
    arguments: str | None = None
    inventory_id: Id | None = None


class RunnerRequest(msgspec.Struct):
    name: str = ""
    webhook: str = ""
    max_parallel_tasks: Count = 0
    tag: str = ""
    tags: list[str] = []
    active: bool = True


class RunnerActive(msgspec.Struct):
    active: bool


class RolloutRequest(msgspec.Struct, forbid_unknown_fields=True):
    """PUT /api/runners/update: update runners to `version` (all, a project's, or one), first
    `canary` of them, the rest once those were healthy for `healthy_seconds`
    (`healthy_minutes` * 60 if given instead)."""

    version: str
    project_id: int | None = None
    runner_id: int | None = None
    canary: Annotated[int, msgspec.Meta(ge=0, le=10000)] = 1
    healthy_minutes: Annotated[float, msgspec.Meta(ge=0, le=1440)] | None = None
    healthy_seconds: Annotated[float, msgspec.Meta(ge=0, le=86400)] | None = None


class RunnerRegistration(msgspec.Struct):
    registration_token: Name
    max_parallel_tasks: Count = 0
    webhook: str = ""
    public_key: str = ""
    name: str = ""
    tags: list[str] = []


class RegistrationTokenRequest(msgspec.Struct):
    # One-time tokens are for enrolling a machine now: at least a minute, at most a year.
    expires_in_sec: Annotated[int, msgspec.Meta(ge=60, le=365 * 24 * 3600)] = 3600
    project_id: Id | None = None
    tags: Annotated[list[Name], msgspec.Meta(max_length=100)] = []


class UserRequest(msgspec.Struct):
    name: Name
    username: Name
    email: Name
    password: Annotated[str, msgspec.Meta(min_length=8)]
    admin: bool = False
    alert: bool = False
    external: bool = False


class UserPutRequest(msgspec.Struct):
    name: Name
    username: Name
    email: Name
    admin: bool = False
    alert: bool = False


class PasswordRequest(msgspec.Struct):
    password: Annotated[str, msgspec.Meta(min_length=8)]
    # Beyond Semaphore: also revoke every API token of the user (its other sessions always end).
    revoke_tokens: bool = False


Role = Literal["owner", "manager", "task_runner", "guest"]


class ProjectUserRequest(msgspec.Struct):
    user_id: Id
    role: Role


class ProjectRoleRequest(msgspec.Struct):
    role: Role
