package io.rund.ttrpc;

import java.nio.file.attribute.GroupPrincipal;
import java.nio.file.attribute.UserPrincipal;

/** Who is at the other end of a unix socket, as the kernel saw it at connect (SO_PEERCRED). */
public record PeerCredentials(UserPrincipal user, GroupPrincipal group) {

    @Override
    public String toString() {
        return "user=" + user.getName() + " group=" + group.getName();
    }
}
