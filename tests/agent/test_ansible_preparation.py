"""The parts of an ansible run that need no ansible: which requirements files galaxy gets,
the keys' flags and prompts, and the prompt answerer."""

from pathlib import Path

from agent.ansible import BECOME_PROMPTS, SSH_PROMPT, access_flags, ansible_command
from agent.galaxy import requirement_files
from agent.prompts import PromptAnswerer
from protocol.frames import LoginPasswordSecret, SshKeySecret, TaskSecrets, TaskSpec


def test_requirements_files_and_the_kinds_galaxy_installs_them_as(tmp_path):
    (tmp_path / "roles").mkdir()
    (tmp_path / "collections").mkdir()
    (tmp_path / "play").mkdir()
    (tmp_path / "roles" / "requirements.yml").write_text("- src: a\n")
    (tmp_path / "collections" / "requirements.yml").write_text("collections: []\n")
    playbook = tmp_path / "play" / "site.yml"
    playbook.write_text("- hosts: all\n")
    # The older list format is roles only: `collection install` would refuse it.
    (tmp_path / "requirements.yml").write_text("# roles\n- src: b\n")
    found = requirement_files(tmp_path, playbook)
    assert found == [("collection", tmp_path / "collections" / "requirements.yml"),
                     ("role", tmp_path / "roles" / "requirements.yml"),
                     ("role", tmp_path / "requirements.yml")]
    (tmp_path / "requirements.yml").write_text("---\nroles: []\ncollections:\n  - x.y\n")
    (tmp_path / "play" / "requirements.yml").symlink_to("/etc/hostname")
    found = requirement_files(tmp_path, playbook)
    assert ("collection", tmp_path / "requirements.yml") in found
    assert ("role", tmp_path / "requirements.yml") in found
    assert all(path.is_relative_to(tmp_path) for _, path in found)  # no link out of it


def test_the_keys_give_semaphores_flags_and_the_prompts_their_passwords():
    secrets = TaskSecrets(inventory_login=LoginPasswordSecret("deploy", "sshpw"),
                          become=LoginPasswordSecret("admin", "becomepw"))
    flags, answers = access_flags(secrets)
    assert flags == ["--user=deploy", "--ask-pass", "--become-user=admin",
                     "--ask-become-pass"]
    assert answers == {SSH_PROMPT: "sshpw", **dict.fromkeys(BECOME_PROMPTS, "becomepw")}
    flags, answers = access_flags(TaskSecrets(
        inventory_ssh_key=SshKeySecret(private_key="k", login="ops")))
    assert flags == ["--user=ops"] and answers == {}
    spec = TaskSpec(project_id=1, template_id=2, app="ansible", playbook="site.yml",
                    debug=True, limit="web")
    argv = ansible_command("ansible-playbook", spec, Path("/c/site.yml"), 7,
                           Path("/t/inventory"), Path("/t/x.json"), ["--user=ops"],
                           ["--vault-id=a@/t/vault_0"])
    assert argv == ["ansible-playbook", "-i", "/t/inventory", "--user=ops", "-vvvv",
                    "--vault-id=a@/t/vault_0", "--extra-vars", "@/t/x.json", "--limit=web",
                    "/c/site.yml"]


def test_each_prompt_is_answered_once_even_when_split_over_reads():
    answerer = PromptAnswerer({"SSH password:": "one", "BECOME password": "two"})
    assert answerer.feed("starting\nSSH pass") == []
    assert answerer.feed("word: ") == ["one"]
    assert answerer.feed("\nSSH password: again") == []  # answered once only
    assert answerer.feed("BECOME password[defaults to SSH password]: ") == ["two"]
    assert answerer.feed("BECOME password: ") == []
