"""Front workers: processes beside the server that accept on its main address, read and
verify Invokes, and hand everything else to the server (see `lamina.front.worker`). Kept
apart from `lamina.api` so that a worker imports only what it needs."""
