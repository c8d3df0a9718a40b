"""A Gradient-compatible local server (extra `server`): FastAPI app, SQLite catalogue, engines, fault knobs.

Example::

    from gradient_async.server import ServerSettings, create_app
    app = create_app(ServerSettings(data_dir=Path("/tmp/g"), credentials={"tok": {"ws"}}))
    # uvicorn.run(app, host="127.0.0.1", port=8000)   or: gradient-async serve
"""

from gradient_async.server.app import API_PREFIX, create_app
from gradient_async.server.faults import FaultSettings
from gradient_async.server.settings import ServerSettings, default_data_dir, generate_token, load_credentials
from gradient_async.server.state import CallRecord, ServerState
from gradient_async.server.store import base_model_id, new_adapter_id

__all__ = [
    "API_PREFIX",
    "CallRecord",
    "FaultSettings",
    "ServerSettings",
    "ServerState",
    "base_model_id",
    "create_app",
    "default_data_dir",
    "generate_token",
    "load_credentials",
    "new_adapter_id",
]
