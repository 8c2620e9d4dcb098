package io.rund.sandbox.lifecycle;

import io.rund.rootfs.Dirs;
import io.rund.rootfs.HostDirShare;
import io.rund.rootfs.ReadOnlyLayer;
import io.rund.rootfs.StoreException;
import io.rund.rootfs.WritableLayer;
import io.rund.sandbox.Fault;
import io.rund.sandbox.agent.AgentClient;
import io.rund.sandbox.cgroup.Cgroup;
import io.rund.sandbox.guest.ResourceLimits;
import io.rund.sandbox.network.PodNetwork;
import io.rund.vm.VmConfig;
import io.rund.vm.VmJail;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;

/**
 * A sandbox's resources, in the order a start acquires them: the one description of that
 * order and of each resource's life. A start runs {@link #acquire} of each in declaration
 * order; each pushes its release on the start's {@link Teardown} the moment it holds it
 * (so a failed start and a stop release in reverse). A restarted daemon, which has only
 * the disk, releases each the same way in the same reverse order from the state file
 * ({@link #recover}). The agent connection and the writable layer need nothing from
 * recovery: the one dies with the daemon, the other (an unlinked file) with its VM.
 */
enum Resource {
    /**
     * {@code <state root>/<id>/}, with state.json: made, or a spare VM's renamed to it (the
     * spare's VM, helper and share come with it).
     */
    STATE_DIR {
        @Override
        void acquire(Starting s) throws Exception {
            try {
                s.manager.store().requireRoom(s.id, s.size.diskMiB());
            } catch (StoreException e) {
                throw new SandboxException(Fault.RESOURCE_EXHAUSTED, e.getMessage(), e);
            }
            s.step("take a spare VM");
            s.spare = s.manager.takeSpare(s.id, s.dir, s.size);
            s.step("create its state directory");
            if (s.spare == null) {
                Files.createDirectory(s.dir, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
            }
            s.undo.push(this, s.dir.toString(), () -> Dirs.removeShallow(s.dir));
            SandboxState state = SandboxState.of(s.id, SandboxState.Phase.STARTING,
                    s.manager.hypervisor().accelerator().kind().name()).withVm(0, "", s.dir.toString());
            if (s.spare != null) {
                var spare = s.spare;
                s.undo.push(VM, "spare " + spare.name(), () -> spare.closeIn(s.dir));
                // A spare's VM runs from the start; its command line names the spare's directory.
                s.boot = "clone " + spare.key();
                state = state.withVm(spare.vm().pid(), s.boot, spare.dir().toString());
            }
            if (s.network != null) {
                state = state.withNetwork(s.network.netns().toString(), s.network.ifname());
            }
            s.step("record its state");
            s.write(state);
        }

        @Override
        void recover(Recovery r, String id, Path dir, SandboxState state) throws Exception {
            Dirs.removeShallow(dir);
        }
    },
    /** A cgroup of the pool, claimed by the sandbox and limited; its VM and helper run in it. */
    CGROUP {
        @Override
        void acquire(Starting s) throws Exception {
            s.step("claim a cgroup");
            Cgroup cgroup = s.manager.pool().claim(s.id);
            s.undo.push(this, "pool", () -> Recovery.killAndRelease(s.manager.pool(), cgroup));
            s.cgroup = cgroup;
            // What the VM holds (a pod's total, from CRI's annotations) bounds it on the host too.
            ResourceLimits vm = s.spec.vmResources();
            cgroup.setLimits(new Cgroup.Limits(((long) s.size.memoryMiB() << 20)
                    + SandboxManager.VM_OVERHEAD_BYTES, vm.quotaPer100ms(), 100_000, 512,
                    vm.cpuShares() == null ? 0 : vm.cpuShares()));
            if (s.spare != null) {
                for (long p : s.spare.vm().processes()) {
                    cgroup.bind(p);
                }
                cgroup.bind(s.spare.helper().process().pid());
                cgroup.bind(s.spare.hostHelper().process().pid());
            }
            s.write(s.state.withCgroup(cgroup.slot()));
        }

        @Override
        void recover(Recovery r, String id, Path dir, SandboxState state) throws Exception {
            r.releaseCgroup(id);
        }
    },
    /**
     * The shares: images ({@code dir/shared}) and host directories ({@code dir/hostdirs}),
     * each with the helper serving it (a spare's, or started now as
     * the VM's uid, reserved here); then the first container's image and host directories.
     */
    SHARE {
        @Override
        void acquire(Starting s) throws Exception {
            s.step("prepare the shares");
            if (s.spare != null) { // its uid goes with the spare's processes
                s.readOnly = ReadOnlyLayer.adopt(s.id, s.dir, s.spare.helper());
                s.undo.push(this, "image share and helper", s.readOnly::close);
                s.hostDirs = HostDirShare.adopt(s.id, s.dir, s.spare.hostHelper());
                s.undo.push(this, "host-directory share and helper", s.hostDirs::close);
            } else {
                // The VM's uid, reserved now: its helpers run as it, and reach its memory by it.
                VmJail jail = s.manager.hypervisor().jail();
                int uid = jail.acquire();
                s.uid = uid;
                // Pushed before the helpers' and the VM's own releases, so it runs after them: the
                // uid goes back once none of them lives (the VM's release waits for its exit).
                s.undo.push(VM, "uid " + uid, () -> s.manager.releaseWhenGone(uid, null,
                        s.readOnly == null ? null : s.readOnly.helper(), s.hostDirs == null ? null : s.hostDirs.helper()));
                s.readOnly = ReadOnlyLayer.start(s.id, s.dir, jail.helperJail(uid));
                s.undo.push(this, "image share and helper", s.readOnly::close);
                s.cgroup.bind(s.readOnly.helper().process().pid());
                s.hostDirs = HostDirShare.start(s.id, s.dir, jail.helperJail(uid));
                s.undo.push(this, "host-directory share and helper", s.hostDirs::close);
                s.cgroup.bind(s.hostDirs.helper().process().pid());
                // A helper whose VM never comes waits 300 s for it: a restarted daemon ends it sooner.
                s.write(s.state.withHelpers(s.readOnly.helper().process().pid(), s.hostDirs.helper().process().pid()));
            }
            s.image = s.readOnly.add(s.id, s.lowers);
            s.dirs = HostDirs.attach(s.hostDirs, s.spec); // they go with the share
        }

        @Override
        void recover(Recovery r, String id, Path dir, SandboxState state) {
            if (state != null) {
                r.killHelper(state.helperPid());
                r.killHelper(state.hostHelperPid());
            }
            r.killHelpersNamed(id); // started before the state file named them
            ReadOnlyLayer.unmountIn(dir);
            HostDirShare.unmountIn(dir);
        }
    },
    /** The VM (QEMU) with its tap and its writable layer: a spare's resumed, or one launched now. */
    VM {
        @Override
        void acquire(Starting s) throws Exception {
            if (s.spare != null) {
                s.tap = s.spare.tap();
                s.step("resume the spare VM");
                s.spare.vm().resume();
                s.spare.disk().close(); // QEMU has reopened it
                s.vm = s.spare.vm();
                s.boot = s.boot + " (spare)";
                s.write(s.state.withHelpers(s.spare.helper().process().pid(), s.spare.hostHelper().process().pid()));
                return;
            }
            s.tap = VmConfig.newTapName();
            s.step("find its template");
            SandboxManager.Launched launched;
            try {
                launched = s.manager.launch(s.id, s.dir, from -> {
                    s.step("create the writable layer");
                    WritableLayer writable = s.manager.store().create(s.id, s.size.diskMiB(), from);
                    s.step("launch the VM");
                    return writable;
                }, s.readOnly, s.hostDirs, s.cgroup, s.tap, s.uid, s.size);
            } catch (StoreException e) {
                throw new SandboxException(Fault.RESOURCE_EXHAUSTED, e.getMessage(), e);
            }
            s.undo.push(this, "QEMU", launched.vm()::close);
            s.vm = launched.vm();
            s.boot = launched.boot();
            for (long p : s.vm.processes()) {
                s.cgroup.bind(p);
            }
            // The helpers now serving it (a failed clone's were replaced), for a restarted daemon to adopt.
            s.write(s.state.withVm(s.vm.pid(), s.boot, s.dir.toString())
                    .withHelpers(s.readOnly.helper().process().pid(), s.hostDirs.helper().process().pid()));
        }

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
        void acquire(Starting s) throws Exception {
            PodNetwork network = s.network;
            if (network != null) {
                s.step("connect the VM to the pod network");
                s.undo.push(this, network.ifname(), () -> PodNetwork.disconnect(network.netns(), network.ifname()));
                network.connect(s.tap);
            }
        }

        @Override
        void recover(Recovery r, String id, Path dir, SandboxState state) {
            if (state != null && state.netns() != null) {
                PodNetwork.disconnect(Path.of(state.netns()), state.podInterface());
            }
        }
    },
    /** The daemon's connection to the guest agent, which sets the guest's clock, entropy and network. */
    AGENT {
        @Override
        void acquire(Starting s) throws Exception {
            // The answer that says the agent serves also set its clock and entropy (Wake).
            s.step("wake the agent");
            AgentClient agent = AgentClient.wake(s.dir.resolve("agent.sock"), s.manager.config().agentDeadline(),
                    Duration.ofSeconds(30), s.manager::seed);
            s.undo.push(this, "connection", agent::close);
            s.agent = agent;
            if (s.network != null) {
                s.step("configure the guest's network");
                agent.configureNetwork(s.network.guest());
            }
        }

        @Override
        void recover(Recovery r, String id, Path dir, SandboxState state) {
            // gone with the daemon that held it
        }
    };

    /**
     * Acquires this resource for the start {@code s}, recording it there (and in the state
     * file when a restarted daemon needs it), and pushes its release on {@code s.undo}
     * before anything that can fail after it holds it.
     */
    abstract void acquire(Starting s) throws Exception;

    /**
     * Releases this resource of sandbox {@code id} as a dead daemon left it, from its
     * directory and its state file ({@code state} null: none was written yet).
     */
    abstract void recover(Recovery r, String id, Path dir, SandboxState state) throws Exception;
}
