"""The browser client: static files served by the server (ES modules, vendored libraries with their licences)."""
