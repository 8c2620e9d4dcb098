package io.rund.ttrpc;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.UserPrincipal;
import java.util.Set;

/**
 * Decides, from the kernel's credentials of a connecting peer, whether the server talks
 * to it at all. A refused connection is closed before any frame is read.
 */
@FunctionalInterface
public interface PeerPolicy {

    /** Null to accept; otherwise why the peer is refused. */
    String refuse(PeerCredentials peer);

    /** Any local peer: for sockets whose file mode already keeps strangers out. */
    static PeerPolicy anyPeer() {
        return peer -> null;
    }

    /** Only peers running as the user this process runs as (containerd's shims do this). */
    static PeerPolicy sameUser() {
        UserPrincipal self;
        try {
            // /proc/self belongs to the effective uid of the process reading it.
            self = Files.getOwner(Path.of("/proc/self"));
        } catch (IOException e) {
            throw new UncheckedIOException("read the owner of /proc/self", e);
        }
        return users(Set.of(self));
    }

    static PeerPolicy users(Set<UserPrincipal> allowed) {
        Set<UserPrincipal> copy = Set.copyOf(allowed);
        return peer -> copy.contains(peer.user()) ? null : "peer " + peer + " is not one of the allowed users " + copy;
    }
}
