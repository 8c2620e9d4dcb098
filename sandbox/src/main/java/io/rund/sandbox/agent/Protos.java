package io.rund.sandbox.agent;

import com.google.protobuf.ByteString;
import io.rund.agent.v1.ConfigureNetworkRequest;
import io.rund.agent.v1.CreateContainerRequest;
import io.rund.agent.v1.IpAddress;
import io.rund.agent.v1.Mount;
import io.rund.agent.v1.Process;
import io.rund.agent.v1.Rlimit;
import io.rund.agent.v1.Rootfs;
import io.rund.agent.v1.Route;
import io.rund.agent.v1.UpdateResourcesRequest;
import io.rund.sandbox.guest.GuestContainer;
import io.rund.sandbox.guest.GuestMount;
import io.rund.sandbox.guest.GuestNetwork;
import io.rund.sandbox.guest.ProcessSpec;
import io.rund.sandbox.guest.ResourceLimits;
import io.rund.vm.VmConfig;

/** The daemon's guest records as agent.proto messages: the one place they are built. */
final class Protos {

    private Protos() {}

    static CreateContainerRequest container(GuestContainer c) {
        return CreateContainerRequest.newBuilder()
                .setContainerId(c.id())
                .setRootfs(Rootfs.newBuilder().setLowerTag(VmConfig.LOWER_TAG).setLowerDir(c.lowerDir())
                        .setUpperDiskSerial(VmConfig.UPPER_SERIAL).setUpperDir(c.upperDir()))
                .setHostname(c.hostname())
                .addAllMounts(c.mounts().stream().map(Protos::mount).toList())
                .addAllMaskedPaths(c.maskedPaths())
                .addAllReadonlyPaths(c.readonlyPaths())
                .setProcess(process(c.process()))
                .setPodNamespacesOf(c.podNamespacesOf())
                .build();
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
        return b.build();
    }

    static UpdateResourcesRequest resources(String containerId, ResourceLimits l) {
        return UpdateResourcesRequest.newBuilder().setContainerId(containerId)
                .setMemoryLimitBytes(l.memoryLimitBytes()).setCpuQuotaUsec(l.cpuQuotaMicros())
                .setCpuPeriodUsec(l.cpuPeriodMicros()).setPidsLimit(l.pidsLimit()).build();
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
