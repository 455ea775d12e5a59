/*
 * http.h -- the libmicrohttpd front of `llama3c serve`: routing, authentication, request-size
 * limits, non-streamed and SSE responses. One thread per connection (bounded by
 * server.max_connections); the engine runs elsewhere (scheduler.h).
 */
#ifndef L3C_SERVER_HTTP_H
#define L3C_SERVER_HTTP_H

#include "server.h"

struct MHD_Daemon;

/* Binds and listens on srv->host:srv->port: the socket, or -1 with the reason on stderr
 * ("Address already in use", ...). Done before the model loads, so a busy port fails at once. */
int http_listen(const server *srv);
/* Serves on the listening socket fd (taken over, also on failure). NULL (message on stderr) on
 * failure. */
struct MHD_Daemon *http_start(server *srv, int fd);
/* The port actually bound (useful with port 0). */
int http_port(struct MHD_Daemon *d);
/* Stops accepting new connections; connections already open go on. */
void http_quiesce(struct MHD_Daemon *d);
/* Closes every connection and joins their threads. NULL-safe. */
void http_stop(struct MHD_Daemon *d);

/* The web chat page served at GET / (web_page.c). */
extern const char l3c_web_page[];
extern const size_t l3c_web_page_len;

#endif
