"""Server tests use the test kit's fixtures directly (the pytest11 entry point may not be installed yet)."""

from gradient_async.testing import gradient_server, gradient_server_url, mock_gradient

__all__ = ["gradient_server", "gradient_server_url", "mock_gradient"]
