package io.rund.shim.oci;

import com.fasterxml.jackson.databind.JsonNode;
import io.rund.sandbox.Fault;
import io.rund.sandbox.guest.ContainerConfig;
import io.rund.sandbox.guest.ResourceLimits;
import io.rund.sandbox.guest.SeccompProfile;
import io.rund.shim.TaskFault;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * The spec's {@code linux} object in guest terms: namespaces, resources, sysctls, seccomp,
 * hidden and read-only paths, propagation. What a VM cannot honour is refused here, at
 * Create, naming the field and its value (docs/oci.md lists every field).
 */
final class OciLinux {

    private OciLinux() {}

    /** Namespaces a container may have, and what a path to one means (see {@link #namespaces}). */
    private static final Set<String> NAMESPACES = Set.of("pid", "network", "ipc", "uts", "mount", "cgroup", "user", "time");

    /**
     * Which namespaces the container gets. Every container has its own mount namespace;
     * PID, IPC and UTS are new, or the pod's when the spec names a namespace path (CRI
     * joins a pod's container to its sandbox's by path); the network is the VM's when the
     * spec names a path (the pod's, made by CNI), else one of its own with a loopback
     * interface, as runc makes. A namespace the spec leaves out is the host's under runc:
     * a VM has no host namespace to give, so that is refused.
     *
     * @param podMember whether the container joins a pod (its paths name the pod's namespaces)
     */
    static ContainerConfig.Namespaces namespaces(String where, JsonNode list, boolean podMember) throws TaskFault {
        Map<String, String> ns = new LinkedHashMap<>();
        for (JsonNode n : list) {
            String type = n.path("type").asText("");
            if (!NAMESPACES.contains(type)) {
                throw refuse(where, "type " + type, "is not a Linux namespace type");
            }
            if (ns.put(type, n.path("path").asText("")) != null) {
                throw refuse(where, type, "is listed twice");
            }
        }
        for (String needed : List.of("mount", "network", "pid", "ipc", "uts")) { // network first: CRI drops uts with it
            if (!ns.containsKey(needed)) {
                throw refuse(where, needed + " absent (the host's " + needed + " namespace)",
                        "a VM has no host namespace to share");
            }
        }
        if (!ns.get("mount").isEmpty()) {
            throw refuse(where, "mount path " + ns.get("mount"), "a container's mount namespace is always its own");
        }
        if (ns.containsKey("user")) {
            throw refuse(where, "user", "user namespaces are not supported in rund's guest");
        }
        if (ns.containsKey("time")) {
            throw refuse(where, "time", "time namespaces are not supported in rund's guest");
        }
        if (ns.containsKey("cgroup") && !ns.get("cgroup").isEmpty()) {
            throw refuse(where, "cgroup path " + ns.get("cgroup"), "a container's cgroup namespace is always its own");
        }
        boolean podIpc = !ns.get("ipc").isEmpty();
        boolean podUts = !ns.get("uts").isEmpty();
        boolean podPid = !ns.get("pid").isEmpty();
        if ((podIpc || podUts || podPid) && !podMember) {
            String which = podIpc ? "ipc" : podUts ? "uts" : "pid";
            throw refuse(where, which + " path " + ns.get(which), "only a pod's containers join namespaces, their pod's");
        }
        if (podIpc != podUts) {
            throw refuse(where, podIpc ? "ipc path without a uts path" : "uts path without an ipc path",
                    "a pod's containers share its IPC and UTS namespaces together or not at all");
        }
        return new ContainerConfig.Namespaces(podPid, podIpc, ns.get("network").isEmpty(), ns.containsKey("cgroup"));
    }

    /** Namespaced sysctls only, as runc allows them: a VM is no excuse to let one change the whole guest. */
    static Map<String, String> sysctls(String where, JsonNode sysctl, ContainerConfig.Namespaces ns) throws TaskFault {
        Map<String, String> out = new LinkedHashMap<>();
        var it = sysctl.fields();
        while (it.hasNext()) {
            var e = it.next();
            String key = e.getKey();
            if (!e.getValue().isTextual()) {
                throw refuse(where, key + "=" + e.getValue(), "is not a string");
            }
            boolean ipc = Set.of("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                    "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced").contains(key) || key.startsWith("fs.mqueue.");
            boolean uts = key.equals("kernel.hostname") || key.equals("kernel.domainname");
            boolean net = key.startsWith("net.");
            if (!SYSCTL.matcher(key).matches() || !(ipc || uts || net)) {
                throw refuse(where, key, "is not a namespaced sysctl (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, "
                        + "kernel.hostname, kernel.domainname, net.*)");
            }
            if ((ipc || uts) && ns.podIpcAndUts()) {
                throw refuse(where, key, "would change the pod's shared " + (ipc ? "IPC" : "UTS") + " namespace");
            }
            out.put(key, e.getValue().asText());
        }
        return out;
    }

    private static final Pattern SYSCTL = Pattern.compile("[a-z0-9_]+(\\.[A-Za-z0-9_-]+)+");

    /**
     * linux.resources: memory (limit, swap, reservation), cpu (shares, quota, period, cpus,
     * mems), pids, the device rules (a BPF device program in the guest, as runc's on cgroup
     * v2). What cgroup v2 in a VM cannot do is refused.
     */
    static ResourceLimits resources(String where, JsonNode r, boolean create) throws TaskFault {
        if (r.isMissingNode() || r.isNull()) {
            return create ? new ResourceLimits(null, null, null, null, null, null, null, null, null, DENY_ALL)
                    : ResourceLimits.NONE;
        }
        JsonNode memory = r.path("memory");
        refuseSet(where + ".memory", memory, "kernel", "kernel memory limits do not exist in cgroup v2");
        refuseSet(where + ".memory", memory, "kernelTCP", "kernel memory limits do not exist in cgroup v2");
        refuseSet(where + ".memory", memory, "swappiness", "cgroup v2 has no per-cgroup swappiness");
        if (memory.path("disableOOMKiller").asBoolean(false)) {
            throw refuse(where + ".memory", "disableOOMKiller true", "cgroup v2 cannot turn the OOM killer off");
        }
        JsonNode cpu = r.path("cpu");
        refuseSet(where + ".cpu", cpu, "realtimeRuntime", "the guest runs no real-time groups");
        refuseSet(where + ".cpu", cpu, "realtimePeriod", "the guest runs no real-time groups");
        refuseSet(where + ".cpu", cpu, "idle", "cpu.idle is not applied in rund's guest");
        refuseSet(where + ".cpu", cpu, "burst", "cpu.max.burst is not applied in rund's guest");
        refuseSet(where, r, "blockIO", "block I/O limits would name host devices");
        refuseSet(where, r, "network", "classID and priorities are cgroup v1 only");
        refuseSet(where, r, "rdma", "a VM has no RDMA devices");
        refuseSet(where, r, "unified", "cgroup v2 files by name are not applied in rund's guest");
        if (r.path("hugepageLimits").size() > 0) {
            throw refuse(where, "hugepageLimits", "the guest has no huge pages");
        }
        return new ResourceLimits(number(where + ".memory.limit", memory.path("limit")),
                number(where + ".memory.swap", memory.path("swap")),
                number(where + ".memory.reservation", memory.path("reservation")),
                number(where + ".cpu.shares", cpu.path("shares")), number(where + ".cpu.quota", cpu.path("quota")),
                number(where + ".cpu.period", cpu.path("period")), text(where + ".cpu.cpus", cpu.path("cpus")),
                text(where + ".cpu.mems", cpu.path("mems")), number(where + ".pids.limit", r.path("pids").path("limit")),
                devices(where + ".devices", r.path("devices"), create));
    }

    /** What a container with no device rules gets, as under runc: everything denied but runc's own allowed devices. */
    static final List<ResourceLimits.DeviceRule> DENY_ALL = List.of(new ResourceLimits.DeviceRule(false, "a", null, null, "rwm"));

    /**
     * The device cgroup's rules, checked (type a/b/c, access some of rwm); the guest appends
     * runc's own allowed devices, as runc does. A container without rules gets
     * {@link #DENY_ALL}; an update without rules leaves the container's as they are.
     */
    static List<ResourceLimits.DeviceRule> devices(String where, JsonNode list, boolean create) throws TaskFault {
        List<ResourceLimits.DeviceRule> rules = new ArrayList<>();
        for (JsonNode d : list) {
            if (!d.isObject() || !d.path("allow").isBoolean()) {
                throw refuse(where, d.toString(), "is not a device rule");
            }
            String type = d.path("type").asText("a");
            String access = d.path("access").asText("");
            if (!Set.of("a", "b", "c").contains(type) || !access.matches("[rwm]*")) {
                throw refuse(where, d.toString(), "is not a device rule (type a, b or c; access some of rwm)");
            }
            rules.add(new ResourceLimits.DeviceRule(d.path("allow").asBoolean(), type, number(where + ".major", d.path("major")),
                    number(where + ".minor", d.path("minor")), access));
        }
        return rules.isEmpty() && create ? DENY_ALL : rules;
    }

    /** linux.seccomp; null when absent. */
    static SeccompProfile seccomp(String where, JsonNode s) throws TaskFault {
        if (s.isMissingNode() || s.isNull()) {
            return null;
        }
        if (!s.path("listenerPath").asText("").isEmpty()) {
            throw refuse(where, "listenerPath " + s.path("listenerPath").asText(),
                    "a seccomp agent on the host cannot reach a VM's processes");
        }
        List<SeccompProfile.Rule> rules = new ArrayList<>();
        for (JsonNode rule : s.path("syscalls")) {
            String action = rule.path("action").asText("");
            if (action.equals("SCMP_ACT_NOTIFY")) {
                throw refuse(where, "action SCMP_ACT_NOTIFY", "a seccomp agent on the host cannot reach a VM's processes");
            }
            List<SeccompProfile.Arg> args = new ArrayList<>();
            for (JsonNode a : rule.path("args")) {
                args.add(new SeccompProfile.Arg(a.path("index").asInt(), a.path("value").asLong(),
                        a.path("valueTwo").asLong(), a.path("op").asText("")));
            }
            rules.add(new SeccompProfile.Rule(OciSpec.strings(where + ".syscalls.names", rule.path("names")), action,
                    rule.has("errnoRet") ? rule.path("errnoRet").asInt() : null, args));
        }
        String defaultAction = s.path("defaultAction").asText("");
        if (defaultAction.isEmpty()) {
            throw refuse(where, "defaultAction", "is missing");
        }
        return new SeccompProfile(defaultAction, s.has("defaultErrnoRet") ? s.path("defaultErrnoRet").asInt() : null,
                OciSpec.strings(where + ".architectures", s.path("architectures")),
                OciSpec.strings(where + ".flags", s.path("flags")), rules);
    }

    /** What the rest of {@code linux} may hold: refused when set, or accepted with a reason. */
    static void refuseTheRest(String where, JsonNode linux, List<String> warnings) throws TaskFault {
        if (linux.path("uidMappings").size() > 0 || linux.path("gidMappings").size() > 0) {
            throw refuse(where, "uidMappings/gidMappings", "user namespaces are not supported in rund's guest");
        }
        for (JsonNode d : linux.path("devices")) {
            throw refuse(where + ".devices", d.path("path").asText("?"), "host devices are not passed into a VM");
        }
        refuseSet(where, linux, "timeOffsets", "time namespaces are not supported in rund's guest");
        refuseSet(where, linux, "intelRdt", "a VM has no resctrl");
        refuseSet(where, linux, "personality", "execution domains are not set in rund's guest");
        refuseSet(where, linux, "memoryPolicy", "NUMA memory policies are not set in rund's guest");
        refuseSet(where, linux, "netDevices", "host network devices are not moved into a VM");
        String propagation = linux.path("rootfsPropagation").asText("");
        if (!propagation.isEmpty() && !Set.of("private", "rprivate", "slave", "rslave", "shared", "rshared")
                .contains(propagation)) {
            throw refuse(where, "rootfsPropagation " + propagation, "is not a propagation type");
        }
        if (!linux.path("mountLabel").asText("").isEmpty()) {
            warnings.add(where + ".mountLabel " + linux.path("mountLabel").asText()
                    + " is not applied: SELinux labels say how the host confines a container; a VM's guest has no policy");
        }
    }

    private static Long number(String where, JsonNode n) throws TaskFault {
        if (n.isMissingNode() || n.isNull()) {
            return null;
        }
        if (!n.canConvertToLong()) {
            throw refuse(where, n.toString(), "is not a number");
        }
        return n.asLong();
    }

    private static String text(String where, JsonNode n) throws TaskFault {
        if (n.isMissingNode() || n.isNull()) {
            return null;
        }
        if (!n.isTextual()) {
            throw refuse(where, n.toString(), "is not a string");
        }
        return n.asText();
    }

    private static void refuseSet(String where, JsonNode parent, String field, String why) throws TaskFault {
        JsonNode v = parent.path(field);
        if (!v.isMissingNode() && !v.isNull() && !(v.isContainerNode() && v.isEmpty())) {
            throw refuse(where + "." + field, v.toString(), why);
        }
    }

    /**
     * The fields of each object of the spec rund reads, by its path ("" the top level):
     * docs/oci.md says what rund does with each. A field not listed is one this rund does
     * not know (a newer runtime spec's): refused by name, never dropped.
     */
    static final java.util.Map<String, Set<String>> KNOWN = java.util.Map.of(
            "", Set.of("ociVersion", "process", "root", "hostname", "domainname", "mounts", "hooks", "annotations", "linux",
                    "solaris", "windows", "vm", "zos"),
            "process", Set.of("terminal", "consoleSize", "user", "args", "commandLine", "env", "cwd", "capabilities",
                    "rlimits", "noNewPrivileges", "apparmorProfile", "oomScoreAdj", "selinuxLabel", "ioPriority", "scheduler",
                    "execCPUAffinity"),
            "process.user", Set.of("uid", "gid", "umask", "additionalGids", "username"),
            "linux", Set.of("namespaces", "uidMappings", "gidMappings", "timeOffsets", "devices", "cgroupsPath", "resources",
                    "rootfsPropagation", "seccomp", "sysctl", "maskedPaths", "readonlyPaths", "mountLabel", "intelRdt",
                    "personality", "memoryPolicy", "netDevices"),
            "linux.resources", Set.of("devices", "memory", "cpu", "blockIO", "hugepageLimits", "network", "pids", "rdma",
                    "unified"),
            "linux.resources.memory", Set.of("limit", "reservation", "swap", "kernel", "kernelTCP", "swappiness",
                    "disableOOMKiller", "useHierarchy", "checkBeforeUpdate"),
            "linux.resources.cpu", Set.of("shares", "quota", "burst", "period", "realtimeRuntime", "realtimePeriod", "cpus",
                    "mems", "idle"),
            "linux.resources.pids", Set.of("limit"));

    /** Refuses a field of {@code spec} that {@link #KNOWN} does not list, naming its path. */
    static void refuseUnknown(String where, JsonNode spec) throws TaskFault {
        for (var e : KNOWN.entrySet()) {
            JsonNode object = spec;
            for (String step : e.getKey().isEmpty() ? new String[0] : e.getKey().split("\\.")) {
                object = object.path(step);
            }
            if (!object.isObject()) {
                continue;
            }
            var names = object.fieldNames();
            while (names.hasNext()) {
                String name = names.next();
                if (!e.getValue().contains(name)) {
                    String path = e.getKey().isEmpty() ? name : e.getKey() + "." + name;
                    throw refuse(where, path, "is a field this rund does not know, so it cannot honour it");
                }
            }
        }
    }

    /** InvalidArgument naming the field and the value. */
    static TaskFault refuse(String where, String what, String why) {
        return new TaskFault(Fault.INVALID_ARGUMENT, where + ": " + what + ": " + why + " (rund refuses what it cannot honour; "
                + "see docs/oci.md)");
    }
}
