/*
 * Licensed under the Apache License, Version 2.0.
 *
 * The original destination of an accepted TCP connection, shared by the http and stream
 * modules of this addon.
 *
 * Istio's init container (istio-iptables) REDIRECTs a pod's traffic to the proxy's ports
 * (15001 outbound, 15006 inbound). REDIRECT rewrites the destination, so the accepted socket's
 * local address is the proxy's own; the address the client connected to survives in the
 * connection tracking entry, which the kernel hands out through getsockopt(SO_ORIGINAL_DST)
 * for IPv4 and getsockopt(IP6T_SO_ORIGINAL_DST) for IPv6.
 *
 * A connection that was not redirected (no NAT, no conntrack entry, TPROXY interception, a
 * client that connected to the proxy's port itself) has its destination in the local address,
 * so that is the answer when the kernel reports none, as Envoy's original_dst listener filter
 * keeps the local address in that case.
 */

#ifndef _NGX_AMESH_ORIGINAL_DST_H_INCLUDED_
#define _NGX_AMESH_ORIGINAL_DST_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#if (NGX_LINUX)
#include <linux/netfilter_ipv4.h>
#if (NGX_HAVE_INET6)
#include <linux/netfilter_ipv6/ip6_tables.h>
#endif
#endif


/* The destination and its three textual forms, allocated once per connection. */
typedef struct {
    ngx_str_t       addr;      /* "10.0.0.1", "2001:db8::1" (no brackets, as $server_addr) */
    ngx_str_t       port;      /* "8080" */
    ngx_str_t       endpoint;  /* "10.0.0.1:8080", "[2001:db8::1]:8080" */
    ngx_sockaddr_t  sockaddr;  /* the same address and port */
    socklen_t       socklen;
    unsigned        tracked:1; /* from connection tracking: the connection was redirected */
} ngx_amesh_original_dst_t;


/*
 * Asks conntrack for the connection's original destination. NGX_DECLINED when it has none:
 * the connection was not NATed, or the socket is not a TCP/IP one.
 */
static ngx_int_t
ngx_amesh_original_dst_query(ngx_connection_t *c, ngx_sockaddr_t *sa,
    socklen_t *len)
{
#if (NGX_LINUX)
    int               level, name, family;
    struct sockaddr  *local;

    local = c->local_sockaddr;

    switch (local->sa_family) {

    case AF_INET:
        level = SOL_IP;
        name = SO_ORIGINAL_DST;
        family = AF_INET;
        *len = sizeof(struct sockaddr_in);
        break;

#if (NGX_HAVE_INET6)
    case AF_INET6:
        if (IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *) local)->sin6_addr)) {
            /*
             * An IPv4 client on a dual-stack socket: conntrack tracks the connection
             * as IPv4, and only the IPv4 option finds it.
             */
            level = SOL_IP;
            name = SO_ORIGINAL_DST;
            family = AF_INET;
            *len = sizeof(struct sockaddr_in);

        } else {
            level = SOL_IPV6;
            name = IP6T_SO_ORIGINAL_DST;
            family = AF_INET6;
            *len = sizeof(struct sockaddr_in6);
        }
        break;
#endif

    default:
        return NGX_DECLINED;
    }

    ngx_memzero(sa, sizeof(ngx_sockaddr_t));

    if (getsockopt(c->fd, level, name, sa, len) == -1) {
        /* ENOENT: conntrack has no entry for it, i.e. it was not NATed */
        ngx_log_debug1(NGX_LOG_DEBUG_EVENT, c->log, ngx_socket_errno,
                       "amesh original dst: getsockopt(%s) found none, "
                       "using the local address",
                       family == AF_INET ? "SO_ORIGINAL_DST"
                                         : "IP6T_SO_ORIGINAL_DST");
        return NGX_DECLINED;
    }

    if (sa->sockaddr.sa_family != family) {
        return NGX_DECLINED;
    }

    return NGX_OK;

#else
    return NGX_DECLINED;
#endif
}


/*
 * Sets dst to the destination sa, with strings from pool. An IPv4 address of a dual-stack
 * socket (::ffff:a.b.c.d) is kept in IPv4 form, the form istiod's addresses have. NGX_DECLINED
 * for an address that is not IPv4 or IPv6 (a unix socket has no destination address or port).
 */
static ngx_int_t
ngx_amesh_original_dst_set(ngx_pool_t *pool, struct sockaddr *sa, socklen_t len,
    ngx_amesh_original_dst_t *dst)
{
    size_t      n;
    u_char     *p;
    in_port_t   port;
    u_char      text[NGX_SOCKADDR_STRLEN];

    if (sa->sa_family != AF_INET
#if (NGX_HAVE_INET6)
        && sa->sa_family != AF_INET6
#endif
       )
    {
        return NGX_DECLINED;
    }

    ngx_memcpy(&dst->sockaddr, sa, len);
    dst->socklen = len;

#if (NGX_HAVE_INET6)
    if (sa->sa_family == AF_INET6
        && IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *) sa)->sin6_addr))
    {
        struct sockaddr_in   sin;
        struct sockaddr_in6  *sin6 = (struct sockaddr_in6 *) sa;

        ngx_memzero(&sin, sizeof(struct sockaddr_in));
        sin.sin_family = AF_INET;
        sin.sin_port = sin6->sin6_port;
        ngx_memcpy(&sin.sin_addr, &sin6->sin6_addr.s6_addr[12], 4);

        ngx_memcpy(&dst->sockaddr.sockaddr_in, &sin, sizeof(struct sockaddr_in));
        dst->socklen = sizeof(struct sockaddr_in);
    }
#endif

    sa = &dst->sockaddr.sockaddr;
    len = dst->socklen;

    n = ngx_sock_ntop(sa, len, text, NGX_SOCKADDR_STRLEN, 0);
    p = ngx_pnalloc(pool, n);
    if (p == NULL) {
        return NGX_ERROR;
    }
    dst->addr.len = n;
    dst->addr.data = ngx_cpymem(p, text, n) - n;

    n = ngx_sock_ntop(sa, len, text, NGX_SOCKADDR_STRLEN, 1);
    p = ngx_pnalloc(pool, n);
    if (p == NULL) {
        return NGX_ERROR;
    }
    dst->endpoint.len = n;
    dst->endpoint.data = ngx_cpymem(p, text, n) - n;

    port = ngx_inet_get_port(sa);
    p = ngx_pnalloc(pool, sizeof("65535") - 1);
    if (p == NULL) {
        return NGX_ERROR;
    }
    dst->port.len = ngx_sprintf(p, "%ui", (ngx_uint_t) port) - p;
    dst->port.data = p;

    return NGX_OK;
}


/*
 * Resolves the original destination of c into dst, with strings from pool: connection
 * tracking's answer, else the local address. NGX_DECLINED for a unix socket.
 */
static ngx_int_t
ngx_amesh_original_dst_resolve(ngx_connection_t *c, ngx_pool_t *pool,
    ngx_amesh_original_dst_t *dst)
{
    ngx_int_t       rc;
    socklen_t       len;
    ngx_sockaddr_t  sa;

    if (ngx_connection_local_sockaddr(c, NULL, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    dst->tracked = 0;

    if (ngx_amesh_original_dst_query(c, &sa, &len) == NGX_OK) {
        dst->tracked = 1;

    } else {
        ngx_memcpy(&sa, c->local_sockaddr, c->local_socklen);
        len = c->local_socklen;
    }

    rc = ngx_amesh_original_dst_set(pool, &sa.sockaddr, len, dst);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_log_debug2(NGX_LOG_DEBUG_EVENT, c->log, 0,
                   "amesh original dst: %V from the %s", &dst->endpoint,
                   dst->tracked ? "connection tracking" : "local address");

    return NGX_OK;
}


#endif /* _NGX_AMESH_ORIGINAL_DST_H_INCLUDED_ */
