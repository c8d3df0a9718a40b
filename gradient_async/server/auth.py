"""Who is calling: `Authorization: Bearer <token>` plus `x-gradient-workspace-id`.

No or unknown token: 401. No workspace header, or a workspace the token may not use: 403.
The token itself never appears in an answer or a log line.

Example::

    @router.get("/models")
    async def list_models(workspace: Workspace) -> dict[str, object]: ...
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from gradient_async.server.errors import ApiError
from gradient_async.server.state import ServerState

__all__ = ["State", "Workspace", "caller_key", "get_state", "get_workspace"]

_bearer = HTTPBearer(auto_error=False, description="Your access token")
_workspace_header = APIKeyHeader(name="x-gradient-workspace-id", auto_error=False, description="Your workspace id")


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.gradient
    return state


def _known_token(presented: str, tokens: list[str]) -> str | None:
    for token in tokens:
        if hmac.compare_digest(presented.encode(), token.encode()):
            return token
    return None


def get_workspace(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    workspace: Annotated[str | None, Security(_workspace_header)],
) -> str:
    state = get_state(request)
    if credentials is None or not credentials.credentials:
        raise ApiError(
            401,
            "missing access token: send the header 'Authorization: Bearer <token>' "
            "(GRADIENT_ACCESS_TOKEN for the SDKs)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    creds = state.settings.credentials
    token = _known_token(credentials.credentials, list(creds))
    if token is None:
        raise ApiError(
            401,
            "invalid access token: use a token this server was started with (gradient-async serve --token ...)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not workspace:
        raise ApiError(
            403, "missing workspace: send the header 'x-gradient-workspace-id' (GRADIENT_WORKSPACE_ID for the SDKs)"
        )
    if workspace not in creds[token]:
        raise ApiError(403, f"this access token may not use workspace {workspace!r}")
    request.state.gradient_caller = token  # the admission key (rates are per access token); never logged
    return workspace


def caller_key(request: Request) -> str:
    """The access token of an authenticated request (the key of its rate buckets)."""
    key: str = request.state.gradient_caller
    return key


Workspace = Annotated[str, Depends(get_workspace)]
State = Annotated[ServerState, Depends(get_state)]
