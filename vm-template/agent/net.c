/* The guest's network: loopback at boot, and eth0 (the VM's virtio-net device) given the
 * pod's identity when the host asks. Links are set with ioctls; addresses and routes with
 * rtnetlink, one request at a time, each acknowledged. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if_arp.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "ttrpc.h"

#define GUEST_IF "eth0"
#define MAX_ADDRESSES 16
#define MAX_ROUTES 64

int net_if_flags(int sock, const char *name, short set, struct fault *f)
{
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
        return fail(f, CODE_INTERNAL, "%s: get flags: %s", name, strerror(errno));
    ifr.ifr_flags = (short)(ifr.ifr_flags | set);
    if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
        return fail(f, CODE_INTERNAL, "%s: set flags: %s", name, strerror(errno));
    return 0;
}

void net_loopback_up(void)
{
    struct fault f = {0};
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0 || net_if_flags(sock, "lo", IFF_UP, &f) < 0)
        alog("bring lo up: %s", sock < 0 ? strerror(errno) : f.message);
    if (sock >= 0)
        close(sock);
}

static int parse_mac(const char *s, unsigned char mac[6])
{
    unsigned v[6];
    char end;
    if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &end) != 6
        || strlen(s) != 17)
        return -1;
    for (int i = 0; i < 6; i++)
        mac[i] = (unsigned char)v[i];
    return (mac[0] & 1) ? -1 : 0; /* a multicast address cannot be an interface's */
}

static int parse_ipv4(const char *s, struct in_addr *a)
{
    return inet_pton(AF_INET, s, a) == 1 ? 0 : -1;
}

/* Sends one rtnetlink request and waits for its acknowledgement. */
static int nl_call(int nl, struct nlmsghdr *req, const char *what, struct fault *f)
{
    static uint32_t seq;
    req->nlmsg_seq = ++seq;
    req->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (sendto(nl, req, req->nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
        return fail(f, CODE_INTERNAL, "%s: netlink send: %s", what, strerror(errno));
    char buf[4096];
    for (;;) {
        ssize_t n = recv(nl, buf, sizeof(buf), 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return fail(f, CODE_INTERNAL, "%s: netlink receive: %s", what, strerror(errno));
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != req->nlmsg_seq || h->nlmsg_type != NLMSG_ERROR)
                continue;
            int err = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
            if (err == 0 || err == -EEXIST)
                return 0;
            return fail(f, CODE_INVALID_ARGUMENT, "%s: %s", what, strerror(-err));
        }
    }
}

static void nl_attr(void *msg, unsigned short type, const void *data, size_t len)
{
    struct nlmsghdr *h = msg;
    struct rtattr *a = (struct rtattr *)((char *)msg + NLMSG_ALIGN(h->nlmsg_len));
    a->rta_type = type;
    a->rta_len = (unsigned short)RTA_LENGTH(len);
    memcpy(RTA_DATA(a), data, len);
    h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + RTA_ALIGN(a->rta_len);
}

/* Room for one request: a header, its fixed part and a few attributes. */
union nl_request {
    struct nlmsghdr h;
    char buf[NLMSG_SPACE(sizeof(struct rtmsg) + sizeof(struct ifaddrmsg)) + 64];
};

/* Starts a request that creates (and must not find) an object of `type`; its fixed part. */
static void *nl_begin(union nl_request *req, unsigned short type, size_t fixed)
{
    req->h.nlmsg_len = NLMSG_LENGTH(fixed);
    req->h.nlmsg_type = type;
    req->h.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
    return NLMSG_DATA(&req->h);
}

static int add_address(int nl, int ifindex, const Rund__Agent__V1__IpAddress *ip, struct fault *f)
{
    struct in_addr a;
    if (parse_ipv4(ip->address, &a) < 0)
        return fail(f, CODE_INVALID_ARGUMENT, "address %.64s is not an IPv4 address", ip->address);
    if (ip->prefix_length > 32)
        return fail(f, CODE_INVALID_ARGUMENT, "address %.64s: prefix length %u is over 32", ip->address, ip->prefix_length);
    union nl_request req = {0};
    struct ifaddrmsg *m = nl_begin(&req, RTM_NEWADDR, sizeof(*m));
    m->ifa_family = AF_INET;
    m->ifa_prefixlen = (unsigned char)ip->prefix_length;
    m->ifa_index = (unsigned)ifindex;
    nl_attr(req.buf, IFA_LOCAL, &a, sizeof(a));
    nl_attr(req.buf, IFA_ADDRESS, &a, sizeof(a));
    if (ip->prefix_length < 31) {
        struct in_addr brd = {.s_addr = a.s_addr | htonl(ip->prefix_length ? 0xffffffffu >> ip->prefix_length : 0xffffffffu)};
        nl_attr(req.buf, IFA_BROADCAST, &brd, sizeof(brd));
    }
    char what[96];
    snprintf(what, sizeof(what), "add address %s/%u", ip->address, ip->prefix_length);
    return nl_call(nl, &req.h, what, f);
}

static int add_route(int nl, int ifindex, const Rund__Agent__V1__Route *r, struct fault *f)
{
    struct in_addr dst = {0}, gw;
    unsigned prefix = 0;
    if (strcmp(r->destination, "default") != 0) {
        char buf[32];
        const char *slash = strchr(r->destination, '/');
        char *end;
        if (!slash || (size_t)(slash - r->destination) >= sizeof(buf))
            return fail(f, CODE_INVALID_ARGUMENT, "route destination %.64s is not a.b.c.d/n or default", r->destination);
        memcpy(buf, r->destination, (size_t)(slash - r->destination));
        buf[slash - r->destination] = 0;
        unsigned long n = strtoul(slash + 1, &end, 10);
        if (parse_ipv4(buf, &dst) < 0 || *end || end == slash + 1 || n > 32)
            return fail(f, CODE_INVALID_ARGUMENT, "route destination %.64s is not a.b.c.d/n or default", r->destination);
        prefix = (unsigned)n;
    }
    bool via = r->gateway[0] != 0;
    if (via && parse_ipv4(r->gateway, &gw) < 0)
        return fail(f, CODE_INVALID_ARGUMENT, "route %.64s: gateway %.64s is not an IPv4 address", r->destination, r->gateway);
    union nl_request req = {0};
    struct rtmsg *m = nl_begin(&req, RTM_NEWROUTE, sizeof(*m));
    m->rtm_family = AF_INET;
    m->rtm_dst_len = (unsigned char)prefix;
    m->rtm_table = RT_TABLE_MAIN;
    m->rtm_protocol = RTPROT_BOOT;
    m->rtm_scope = via ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
    m->rtm_type = RTN_UNICAST;
    if (prefix)
        nl_attr(req.buf, RTA_DST, &dst, sizeof(dst));
    if (via)
        nl_attr(req.buf, RTA_GATEWAY, &gw, sizeof(gw));
    nl_attr(req.buf, RTA_OIF, &ifindex, sizeof(ifindex));
    char what[160];
    snprintf(what, sizeof(what), "add route %.64s%s%.64s", r->destination, via ? " via " : "", r->gateway);
    return nl_call(nl, &req.h, what, f);
}

int net_configure(const Rund__Agent__V1__ConfigureNetworkRequest *req, struct fault *f)
{
    unsigned char mac[6];
    if (parse_mac(req->mac, mac) < 0)
        return fail(f, CODE_INVALID_ARGUMENT, "mac %.64s is not a unicast aa:bb:cc:dd:ee:ff", req->mac);
    if (req->mtu != 0 && (req->mtu < 68 || req->mtu > 65535))
        return fail(f, CODE_INVALID_ARGUMENT, "mtu %u is outside 68..65535", req->mtu);
    if (req->n_addresses > MAX_ADDRESSES)
        return fail(f, CODE_INVALID_ARGUMENT, "%zu addresses are more than %d", req->n_addresses, MAX_ADDRESSES);
    if (req->n_routes > MAX_ROUTES)
        return fail(f, CODE_INVALID_ARGUMENT, "%zu routes are more than %d", req->n_routes, MAX_ROUTES);
    int ifindex = (int)if_nametoindex(GUEST_IF);
    if (ifindex == 0)
        return fail(f, CODE_FAILED_PRECONDITION, "the guest has no %s: %s", GUEST_IF, strerror(errno));

    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    int rc = -1;
    if (sock < 0 || nl < 0) {
        fail(f, CODE_INTERNAL, "socket: %s", strerror(errno));
        goto out;
    }
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, IFNAMSIZ, "%s", GUEST_IF);
    if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0) {
        fail(f, CODE_INTERNAL, "%s: get flags: %s", GUEST_IF, strerror(errno));
        goto out;
    }
    if (ifr.ifr_flags & IFF_UP) {
        fail(f, CODE_FAILED_PRECONDITION, "%s is configured already", GUEST_IF);
        goto out;
    }
    ifr.ifr_hwaddr.sa_family = ARPHRD_ETHER;
    memcpy(ifr.ifr_hwaddr.sa_data, mac, 6);
    if (ioctl(sock, SIOCSIFHWADDR, &ifr) < 0) {
        fail(f, CODE_INTERNAL, "%s: set mac %s: %s", GUEST_IF, req->mac, strerror(errno));
        goto out;
    }
    if (req->mtu) {
        ifr.ifr_mtu = (int)req->mtu;
        if (ioctl(sock, SIOCSIFMTU, &ifr) < 0) {
            fail(f, CODE_INVALID_ARGUMENT, "%s: set mtu %u: %s", GUEST_IF, req->mtu, strerror(errno));
            goto out;
        }
    }
    if (net_if_flags(sock, GUEST_IF, IFF_UP, f) < 0)
        goto out;
    for (size_t i = 0; i < req->n_addresses; i++)
        if (add_address(nl, ifindex, req->addresses[i], f) < 0)
            goto out;
    for (size_t i = 0; i < req->n_routes; i++)
        if (add_route(nl, ifindex, req->routes[i], f) < 0)
            goto out;
    alog("%s: %s mtu %u, %zu address(es), %zu route(s)", GUEST_IF, req->mac, req->mtu, req->n_addresses, req->n_routes);
    rc = 0;
out:
    if (sock >= 0)
        close(sock);
    if (nl >= 0)
        close(nl);
    return rc;
}
