package io.rund.test;

import io.rund.test.cri.ContainerConfig;
import io.rund.test.cri.ContainerMetadata;
import io.rund.test.cri.CreateContainerRequest;
import io.rund.test.cri.CreateContainerResponse;
import io.rund.test.cri.DNSConfig;
import io.rund.test.cri.ExecSyncRequest;
import io.rund.test.cri.ExecSyncResponse;
import io.rund.test.cri.ImageSpec;
import io.rund.test.cri.LinuxPodSandboxConfig;
import io.rund.test.cri.LinuxSandboxSecurityContext;
import io.rund.test.cri.Mount;
import io.rund.test.cri.NamespaceMode;
import io.rund.test.cri.NamespaceOption;
import io.rund.test.cri.PodSandboxConfig;
import io.rund.test.cri.PodSandboxMetadata;
import io.rund.test.cri.RemovePodSandboxRequest;
import io.rund.test.cri.RemovePodSandboxResponse;
import io.rund.test.cri.RunPodSandboxRequest;
import io.rund.test.cri.RunPodSandboxResponse;
import io.rund.test.cri.StartContainerRequest;
import io.rund.test.cri.StartContainerResponse;
import io.rund.test.cri.StopPodSandboxRequest;
import io.rund.test.cri.StopPodSandboxResponse;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/** What a kubelet asks CRI for a pod, as the tests ask it: one place for the messages. */
record CriPods(Containerd ctd, CriClient cri) implements AutoCloseable {

    /** A containerd of the test's own with the CRI images imported, and a kubelet's client to it. */
    static CriPods start(String name) throws Exception {
        Containerd ctd = new Containerd(name);
        try {
            ctd.importCriImages();
            return new CriPods(ctd, new CriClient(ctd.socket));
        } catch (Exception | Error e) {
            ctd.close();
            throw e;
        }
    }

    @Override
    public void close() throws Exception {
        try {
            cri.close();
        } finally {
            ctd.close();
        }
    }

    /** A pod on the node's network (NODE) or on its own (POD, from CNI), with a DNS server of its own. */
    PodSandboxConfig pod(String name, NamespaceMode network) throws IOException {
        Path logs = Files.createDirectories(ctd.dir.resolve("pod-logs").resolve(name));
        return PodSandboxConfig.newBuilder()
                .setMetadata(PodSandboxMetadata.newBuilder().setName(name).setUid("uid-" + name).setNamespace("default"))
                .setHostname(name)
                .setDnsConfig(DNSConfig.newBuilder().addServers("10.203.0.53").addSearches("pods.rund.test"))
                .setLogDirectory(logs.toString())
                .setLinux(LinuxPodSandboxConfig.newBuilder().setSecurityContext(LinuxSandboxSecurityContext.newBuilder()
                        .setNamespaceOptions(NamespaceOption.newBuilder().setNetwork(network)
                                .setPid(NamespaceMode.CONTAINER).setIpc(NamespaceMode.POD))))
                .build();
    }

    String runPod(PodSandboxConfig pod, String handler) {
        return cri.runtime("RunPodSandbox", RunPodSandboxRequest.newBuilder().setConfig(pod)
                .setRuntimeHandler(handler).build(), RunPodSandboxResponse.parser()).getPodSandboxId();
    }

    void stopAndRemovePod(String podId) {
        cri.runtime("StopPodSandbox", StopPodSandboxRequest.newBuilder().setPodSandboxId(podId).build(),
                StopPodSandboxResponse.parser());
        cri.runtime("RemovePodSandbox", RemovePodSandboxRequest.newBuilder().setPodSandboxId(podId).build(),
                RemovePodSandboxResponse.parser());
    }

    String createAndStart(String podId, PodSandboxConfig pod, String name, String script, Mount... mounts) {
        return createAndStart(podId, pod, container(name, script).addAllMounts(List.of(mounts)));
    }

    /** A busybox container of the pod that runs {@code script}, its log in the pod's directory as {@code name}.log. */
    static ContainerConfig.Builder container(String name, String script) {
        return ContainerConfig.newBuilder().setMetadata(ContainerMetadata.newBuilder().setName(name))
                .setImage(ImageSpec.newBuilder().setImage(Containerd.IMAGE))
                .addAllCommand(List.of("sh", "-c", script)).setLogPath(name + ".log");
    }

    String create(String podId, PodSandboxConfig pod, ContainerConfig.Builder config) {
        return cri.runtime("CreateContainer", CreateContainerRequest.newBuilder().setPodSandboxId(podId)
                .setSandboxConfig(pod).setConfig(config).build(), CreateContainerResponse.parser()).getContainerId();
    }

    String createAndStart(String podId, PodSandboxConfig pod, ContainerConfig.Builder config) {
        String id = create(podId, pod, config);
        cri.runtime("StartContainer", StartContainerRequest.newBuilder().setContainerId(id).build(),
                StartContainerResponse.parser());
        return id;
    }

    ExecSyncResponse exec(String id, String... cmd) {
        return cri.runtime("ExecSync", ExecSyncRequest.newBuilder().setContainerId(id).addAllCmd(List.of(cmd))
                .setTimeout(60).build(), ExecSyncResponse.parser());
    }
}
