package io.rund.sandbox.lifecycle;

import io.rund.agent.v1.CreateContainerRequest;
import io.rund.agent.v1.Mount;
import io.rund.agent.v1.Process;
import io.rund.agent.v1.Rootfs;
import io.rund.vm.VmConfig;
import java.util.List;

/**
 * The agent's request for a container: its image and writes on the sandbox's share and disk,
 * and, for a container containerd did not give a process of its own, runc's defaults. (Issue
 * "OCI fidelity" moves the defaults to the OCI translation, where the spec is.)
 */
final class ContainerRequests {

    /** Where the pod's volumes live in the guest: a directory of its disk, made by the agent when first mounted. */
    static final String VOLUMES = "/run/rund/disks/" + VmConfig.UPPER_SERIAL + "/volumes/";
    static final List<String> DEFAULT_CAPS = List.of("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID",
            "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE");

    private ContainerRequests() {}

    /**
     * The agent's request for a container whose image is at {@code lowerDir} of the share
     * and whose writes go to {@code upperDir} of the disk ("" for the disk's root: the
     * sandbox's first container, whose writes live as long as the sandbox).
     */
    static CreateContainerRequest of(ContainerSpec spec, String lowerDir, String upperDir) {
        Process process = spec.process() != null ? spec.process()
                : Process.newBuilder().addAllArgs(spec.args()).addAllEnv(spec.env()).setCwd(spec.cwd())
                        .addAllBounding(DEFAULT_CAPS).addAllEffective(DEFAULT_CAPS).addAllPermitted(DEFAULT_CAPS)
                        .setTerminal(spec.terminal()).build();
        return CreateContainerRequest.newBuilder()
                .setContainerId(spec.id())
                .setRootfs(Rootfs.newBuilder().setLowerTag(VmConfig.LOWER_TAG).setLowerDir(lowerDir)
                        .setUpperDiskSerial(VmConfig.UPPER_SERIAL).setUpperDir(upperDir))
                .setHostname(spec.hostname())
                .addMounts(mount("/proc", "proc", "proc", List.of("nosuid", "noexec", "nodev")))
                .addMounts(mount("/dev", "tmpfs", "tmpfs", List.of("nosuid", "strictatime", "mode=755", "size=65536k")))
                .addMounts(mount("/dev/pts", "devpts", "devpts",
                        List.of("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")))
                .addMounts(mount("/dev/shm", "tmpfs", "shm", List.of("nosuid", "noexec", "nodev", "mode=1777", "size=65536k")))
                .addMounts(mount("/dev/mqueue", "mqueue", "mqueue", List.of("nosuid", "noexec", "nodev")))
                .addMounts(mount("/sys", "sysfs", "sysfs", List.of("nosuid", "noexec", "nodev", "ro")))
                .addAllMounts(spec.volumes().stream().map(v -> mount(v.destination(), "bind", VOLUMES + v.name(),
                        List.of("rbind", v.readOnly() ? "ro" : "rw", "nosuid", "nodev"))).toList())
                .addAllMounts(spec.files().stream().map(f -> mount(f.destination(), "file", "",
                        List.of(f.readOnly() ? "ro" : "rw", "nosuid", "nodev", "noexec")).toBuilder()
                        .setData(com.google.protobuf.ByteString.copyFrom(f.data())).build()).toList())
                .addAllMaskedPaths(List.of("/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"))
                .addAllReadonlyPaths(List.of("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"))
                .setProcess(process)
                .build();
    }

    private static Mount mount(String destination, String type, String source, List<String> options) {
        return Mount.newBuilder().setDestination(destination).setType(type).setSource(source).addAllOptions(options)
                .build();
    }

}
