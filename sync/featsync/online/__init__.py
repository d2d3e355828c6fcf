"""The online side: the Redis layout, clients, push and its state, reads and the HTTP server."""
