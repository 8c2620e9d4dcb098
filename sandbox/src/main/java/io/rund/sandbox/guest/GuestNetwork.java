package io.rund.sandbox.guest;

import java.util.List;
import java.util.Objects;

/**
 * The identity the guest's interface takes: the pod interface's MAC, MTU, addresses and
 * routes (added in order: a gateway must be reachable by the routes before it).
 *
 * @param mtu 0 keeps the interface's
 */
public record GuestNetwork(String mac, int mtu, List<Address> addresses, List<Route> routes) {

    /** An IPv4 address with its prefix length. */
    public record Address(String ip, int prefixLength) {}

    /** A route to {@code destination} ("a.b.c.d/n" or "default") via {@code gateway} ("" for on-link). */
    public record Route(String destination, String gateway) {}

    public GuestNetwork {
        Objects.requireNonNull(mac, "mac");
        addresses = List.copyOf(addresses);
        routes = List.copyOf(routes);
    }
}
