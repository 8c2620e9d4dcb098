package io.rund.sandbox.agent;

import com.google.protobuf.ByteString;
import io.rund.agent.v1.ConfigureNetworkRequest;
import io.rund.agent.v1.CreateContainerRequest;
import io.rund.agent.v1.DeviceRule;
import io.rund.agent.v1.Int32;
import io.rund.agent.v1.Int64;
import io.rund.agent.v1.IpAddress;
import io.rund.agent.v1.Mount;
import io.rund.agent.v1.Process;
import io.rund.agent.v1.Resources;
import io.rund.agent.v1.Rlimit;
import io.rund.agent.v1.Rootfs;
import io.rund.agent.v1.Route;
import io.rund.agent.v1.Seccomp;
import io.rund.agent.v1.SyscallArg;
import io.rund.agent.v1.SyscallRule;
import io.rund.agent.v1.UInt32;
import io.rund.agent.v1.UInt64;
import io.rund.agent.v1.UpdateResourcesRequest;
import io.rund.sandbox.guest.ContainerConfig;
import io.rund.sandbox.guest.GuestContainer;
import io.rund.sandbox.guest.GuestMount;
import io.rund.sandbox.guest.GuestNetwork;
import io.rund.sandbox.guest.ProcessSpec;
import io.rund.sandbox.guest.ResourceLimits;
import io.rund.sandbox.guest.SeccompProfile;
import io.rund.vm.VmConfig;

/** The daemon's guest records as agent.proto messages: the one place they are built. */
final class Protos {

    private Protos() {}

    static CreateContainerRequest container(GuestContainer c) {
        ContainerConfig k = c.config();
        ContainerConfig.Namespaces ns = k.namespaces();
        CreateContainerRequest.Builder b = CreateContainerRequest.newBuilder()
                .setContainerId(c.id())
                .setRootfs(Rootfs.newBuilder().setLowerTag(VmConfig.LOWER_TAG).setLowerDir(c.lowerDir())
                        .setUpperDiskSerial(VmConfig.UPPER_SERIAL).setUpperDir(c.upperDir()))
                .setHostname(c.hostname())
                .addAllMounts(k.mounts().stream().map(Protos::mount).toList())
                .addAllMaskedPaths(k.maskedPaths())
                .addAllReadonlyPaths(k.readonlyPaths())
                .setProcess(process(c.process()))
                .setPodNamespacesOf(ns.podIpcAndUts() ? c.podId() : "")
                .setPidNamespaceOf(ns.podPid() ? c.podId() : "")
                .setNewNetworkNamespace(ns.ownNetwork())
                .setNewCgroupNamespace(ns.ownCgroup())
                .setReadonlyRootfs(k.readonlyRoot())
                .putAllSysctls(k.sysctls())
                .setRootfsPropagation(k.rootfsPropagation())
                .setResources(resources(k.resources()));
        if (k.seccomp() != null) {
            b.setSeccomp(seccomp(k.seccomp()));
        }
        return b.build();
    }

    static Mount mount(GuestMount m) {
        return Mount.newBuilder().setDestination(m.destination()).setType(m.type()).setSource(m.source())
                .addAllOptions(m.options()).setData(ByteString.copyFrom(m.data())).build();
    }

    static Process process(ProcessSpec p) {
        Process.Builder b = Process.newBuilder()
                .addAllArgs(p.args()).addAllEnv(p.env()).setCwd(p.cwd())
                .setUid(p.uid()).setGid(p.gid()).addAllAdditionalGids(p.additionalGids())
                .setNoNewPrivileges(p.noNewPrivileges()).setTerminal(p.terminal())
                .addAllBounding(p.capabilities().bounding()).addAllEffective(p.capabilities().effective())
                .addAllPermitted(p.capabilities().permitted()).addAllInheritable(p.capabilities().inheritable())
                .addAllAmbient(p.capabilities().ambient());
        for (ProcessSpec.Rlimit r : p.rlimits()) {
            b.addRlimits(Rlimit.newBuilder().setType(r.type()).setSoft(r.soft()).setHard(r.hard()));
        }
        if (p.umask() != null) {
            b.setUmask(UInt32.newBuilder().setValue(p.umask()));
        }
        if (p.oomScoreAdj() != null) {
            b.setOomScoreAdj(Int32.newBuilder().setValue(p.oomScoreAdj()));
        }
        return b.build();
    }

    static Resources resources(ResourceLimits l) {
        Resources.Builder b = Resources.newBuilder().setCpusetCpus(l.cpusetCpus()).setCpusetMems(l.cpusetMems());
        if (l.memoryLimit() != null) {
            b.setMemoryLimit(Int64.newBuilder().setValue(l.memoryLimit()));
        }
        if (l.memorySwap() != null) {
            b.setMemorySwap(Int64.newBuilder().setValue(l.memorySwap()));
        }
        if (l.memoryReservation() != null) {
            b.setMemoryReservation(Int64.newBuilder().setValue(l.memoryReservation()));
        }
        if (l.cpuShares() != null) {
            b.setCpuShares(UInt64.newBuilder().setValue(l.cpuShares()));
        }
        if (l.cpuQuota() != null) {
            b.setCpuQuota(Int64.newBuilder().setValue(l.cpuQuota()));
        }
        if (l.cpuPeriod() != null) {
            b.setCpuPeriod(UInt64.newBuilder().setValue(l.cpuPeriod()));
        }
        if (l.pidsLimit() != null) {
            b.setPidsLimit(Int64.newBuilder().setValue(l.pidsLimit()));
        }
        for (ResourceLimits.DeviceRule d : l.devices()) {
            DeviceRule.Builder rule = DeviceRule.newBuilder().setAllow(d.allow()).setType(d.type()).setAccess(d.access());
            if (d.major() != null) {
                rule.setMajor(Int64.newBuilder().setValue(d.major()));
            }
            if (d.minor() != null) {
                rule.setMinor(Int64.newBuilder().setValue(d.minor()));
            }
            b.addDevices(rule);
        }
        return b.build();
    }

    static UpdateResourcesRequest update(String containerId, ResourceLimits l) {
        return UpdateResourcesRequest.newBuilder().setContainerId(containerId).setResources(resources(l)).build();
    }

    static Seccomp seccomp(SeccompProfile p) {
        Seccomp.Builder b = Seccomp.newBuilder().setDefaultAction(p.defaultAction())
                .addAllArchitectures(p.architectures()).addAllFlags(p.flags());
        if (p.defaultErrnoRet() != null) {
            b.setDefaultErrnoRet(UInt32.newBuilder().setValue(p.defaultErrnoRet()));
        }
        for (SeccompProfile.Rule r : p.syscalls()) {
            SyscallRule.Builder rule = SyscallRule.newBuilder().addAllNames(r.names()).setAction(r.action());
            if (r.errnoRet() != null) {
                rule.setErrnoRet(UInt32.newBuilder().setValue(r.errnoRet()));
            }
            for (SeccompProfile.Arg a : r.args()) {
                rule.addArgs(SyscallArg.newBuilder().setIndex(a.index()).setValue(a.value()).setValueTwo(a.valueTwo())
                        .setOp(a.op()));
            }
            b.addSyscalls(rule);
        }
        return b.build();
    }

    static ConfigureNetworkRequest network(GuestNetwork n) {
        ConfigureNetworkRequest.Builder b = ConfigureNetworkRequest.newBuilder().setMac(n.mac()).setMtu(Math.max(n.mtu(), 0));
        for (GuestNetwork.Address a : n.addresses()) {
            b.addAddresses(IpAddress.newBuilder().setAddress(a.ip()).setPrefixLength(Math.max(a.prefixLength(), 0)));
        }
        for (GuestNetwork.Route r : n.routes()) {
            b.addRoutes(Route.newBuilder().setDestination(r.destination()).setGateway(r.gateway()));
        }
        return b.build();
    }
}
