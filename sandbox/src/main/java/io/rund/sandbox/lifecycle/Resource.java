package io.rund.sandbox.lifecycle;

import io.rund.rootfs.Dirs;
import io.rund.rootfs.ReadOnlyLayer;
import io.rund.sandbox.network.PodNetwork;
import java.nio.file.Path;

/**
 * A sandbox's resources, in the order a start acquires them: the one description of that
 * order. A start pushes each one's release on its {@link Teardown} as it acquires it (so a
 * failed start and a stop release them in reverse); a restarted daemon, which has only the
 * disk, releases each the same way in the same reverse order from the state file
 * ({@link #recover}). The agent connection and the writable layer need nothing from recovery:
 * the one dies with the daemon, the other (an unlinked file) with its VM.
 */
enum Resource {
    /** {@code <state root>/<id>/}, with state.json. */
    STATE_DIR {
        @Override
        void recover(Recovery r, String id, Path dir, SandboxState state) throws Exception {
            Dirs.removeShallow(dir);
        }
    },
    /** A cgroup of the pool, renamed to or claimed by the sandbox; its VM and helper run in it. */
    CGROUP {
        @Override
        void recover(Recovery r, String id, Path dir, SandboxState state) throws Exception {
            r.releaseCgroup(id);
        }
    },
    /** The share ({@code dir/shared}) with its images, and the helper serving it. */
    SHARE {
        @Override
        void recover(Recovery r, String id, Path dir, SandboxState state) {
            ReadOnlyLayer.unmount(dir.resolve("shared"));
        }
    },
    /** The VM (QEMU), its tap, its writable layer. */
    VM {
        @Override
        void recover(Recovery r, String id, Path dir, SandboxState state) {
            if (state != null) {
                r.killIfOurs(state.vmPid(), dir); // only if it provably is that VM: pids are reused
            }
        }
    },
    /** The VM's tap joined to the pod's interface (a tc redirect in the pod's namespace). */
    POD_NETWORK {
        @Override
        void recover(Recovery r, String id, Path dir, SandboxState state) {
            if (state != null && state.netns() != null) {
                PodNetwork.disconnect(Path.of(state.netns()), state.podInterface());
            }
        }
    },
    /** The daemon's connection to the guest agent. */
    AGENT {
        @Override
        void recover(Recovery r, String id, Path dir, SandboxState state) {
            // gone with the daemon that held it
        }
    };

    /**
     * Releases this resource of sandbox {@code id} as a dead daemon left it, from its
     * directory and its state file ({@code state} null: none was written yet).
     */
    abstract void recover(Recovery r, String id, Path dir, SandboxState state) throws Exception;
}
