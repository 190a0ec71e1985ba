"""SQLite queries for people: users, sessions, API tokens, projects and membership."""

from typing import Any

from hub.store.base import NotFound, Row, StoreError, utcnow
from hub.store.sqlite_base import SqliteConnection, _found

USER_COLUMNS = frozenset({"username", "name", "email", "password", "admin", "alert"})


class PeopleQueries(SqliteConnection):
    # Users, sessions, API tokens.

    async def create_user(self, username: str, name: str, email: str, password_hash: str,
                          admin: bool = False) -> Row:
        user_id = await self._insert("user", {
            "username": username, "name": name, "email": email, "password": password_hash,
            "admin": int(admin), "created": utcnow()})
        return await self.get_user(user_id)

    async def get_user(self, user_id: int) -> Row:
        return _found(await self._point("SELECT * FROM user WHERE id = ?", (user_id,)),
                      "user", user_id)

    async def find_user_by_login(self, login: str) -> Row | None:
        # A username wins over an email: new rows cannot make one login name mean two users
        # (migration 7), but a database from before may still hold such a pair.
        return await self._fetch_one(
            "SELECT * FROM user WHERE username = ? OR email = ? "
            "ORDER BY username = ? DESC, id LIMIT 1", (login, login, login))

    async def list_users(self) -> list[Row]:
        return await self._fetch_all("SELECT * FROM user ORDER BY id")

    async def create_session(self, user_id: int, token_hash: str, expires: float) -> None:
        await self._insert("session", {"token_hash": token_hash, "user_id": user_id,
                                       "created": utcnow(), "expires": expires})

    async def find_session_user(self, token_hash: str, now: float) -> Row | None:
        return await self._point(
            "SELECT user.* FROM session JOIN user ON user.id = session.user_id "
            "WHERE session.token_hash = ? AND session.expires > ?", (token_hash, now))

    async def delete_session(self, token_hash: str) -> None:
        await self._execute("DELETE FROM session WHERE token_hash = ?", (token_hash,))

    async def delete_user_sessions(self, user_id: int, keep_token_hash: str = "") -> int:
        cursor = await self._execute(
            "DELETE FROM session WHERE user_id = ? AND token_hash != ?",
            (user_id, keep_token_hash))
        return cursor.rowcount

    async def create_api_token(self, user_id: int, token_id: str, token_hash: str) -> Row:
        await self._insert("api_token", {"id": token_id, "token_hash": token_hash,
                                         "user_id": user_id, "created": utcnow()})
        return _found(await self._fetch_one("SELECT * FROM api_token WHERE id = ?",
                                            (token_id,)), "api token", token_id)

    async def list_api_tokens(self, user_id: int) -> list[Row]:
        return await self._fetch_all(
            "SELECT * FROM api_token WHERE user_id = ? ORDER BY created", (user_id,))

    async def find_api_token_user(self, token_hash: str) -> Row | None:
        return await self._point(
            "SELECT user.* FROM api_token JOIN user ON user.id = api_token.user_id "
            "WHERE api_token.token_hash = ? AND api_token.expired = 0", (token_hash,))

    async def expire_api_token(self, user_id: int, token_id: str) -> None:
        changed = await self._update("api_token", "user_id = ? AND id = ?", (user_id, token_id),
                                     {"expired": 1})
        if not changed:
            raise NotFound(f"api token {token_id} not found")

    async def expire_user_api_tokens(self, user_id: int) -> int:
        cursor = await self._execute(
            "UPDATE api_token SET expired = 1 WHERE user_id = ? AND expired = 0", (user_id,))
        return cursor.rowcount

    # Projects and membership.

    async def create_project(self, values: dict[str, Any], owner_id: int) -> Row:
        project_id = await self._insert("project", {**values, "created": utcnow()})
        await self._insert("project_user", {"project_id": project_id, "user_id": owner_id,
                                            "role": "owner"})
        return await self.get_project(project_id)

    async def get_project(self, project_id: int) -> Row:
        return _found(await self._point("SELECT * FROM project WHERE id = ?", (project_id,)),
                      "project", project_id)

    async def list_projects(self, user_id: int | None) -> list[Row]:
        if user_id is None:  # an admin sees every project
            return await self._fetch_all("SELECT * FROM project ORDER BY id")
        return await self._fetch_all(
            "SELECT project.* FROM project JOIN project_user ON project_user.project_id = "
            "project.id WHERE project_user.user_id = ? ORDER BY project.id", (user_id,))

    async def update_project(self, project_id: int, values: dict[str, Any]) -> None:
        if not await self._update("project", "id = ?", (project_id,), values):
            await self.get_project(project_id)

    async def delete_project(self, project_id: int) -> None:
        cursor = await self._execute("DELETE FROM project WHERE id = ?", (project_id,))
        if not cursor.rowcount:
            raise NotFound(f"project {project_id} not found")

    async def project_role(self, project_id: int, user_id: int) -> str | None:
        row = await self._point(
            "SELECT role FROM project_user WHERE project_id = ? AND user_id = ?",
            (project_id, user_id))
        return row["role"] if row else None

    # Managing users and project members.

    async def update_user(self, user_id: int, values: dict[str, Any]) -> None:
        unknown = set(values) - USER_COLUMNS
        if unknown:
            raise StoreError(f"user has no column(s) {', '.join(sorted(unknown))}")
        if not await self._update("user", "id = ?", (user_id,), values):
            raise NotFound(f"user {user_id} not found")

    async def delete_user(self, user_id: int) -> None:
        cursor = await self._execute("DELETE FROM user WHERE id = ?", (user_id,))
        if not cursor.rowcount:
            raise NotFound(f"user {user_id} not found")

    async def list_project_users(self, project_id: int) -> list[Row]:
        return await self._fetch_all(
            "SELECT user.id, user.name, user.username, user.email, project_user.role "
            "FROM project_user JOIN user ON user.id = project_user.user_id "
            "WHERE project_user.project_id = ? ORDER BY user.id", (project_id,))

    async def set_project_role(self, project_id: int, user_id: int, role: str) -> None:
        await self.get_user(user_id)
        await self._execute(
            "INSERT INTO project_user (project_id, user_id, role) VALUES (?, ?, ?) "
            "ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role",
            (project_id, user_id, role))

    async def remove_project_user(self, project_id: int, user_id: int) -> None:
        cursor = await self._execute(
            "DELETE FROM project_user WHERE project_id = ? AND user_id = ?",
            (project_id, user_id))
        if not cursor.rowcount:
            raise NotFound(f"user {user_id} is not a member of project {project_id}")
