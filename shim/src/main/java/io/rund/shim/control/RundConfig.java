package io.rund.shim.control;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.dataformat.toml.TomlFactory;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/**
 * The daemon's configuration: defaults, then /etc/rund/rund.toml (RUND_CONFIG names
 * another file), then RUND_* environment variables. A key the file does not know is an
 * error naming the key: a misspelt setting must not be silently ignored.
 *
 * <pre>
 * state_dir = "/run/rund"              # control socket, task sockets, sandbox state
 * guest_dir = "/var/lib/rund/guest"    # vmlinux, initramfs.cpio (hack/build-guest)
 * scratch = "/var/lib/rund/scratch"    # writable-layer store, must clone (hack/setup-store)
 * pool_size = 8                        # pre-created cgroups
 * cgroup_pool = "rund"                 # the pool's directory in each cgroup hierarchy
 * accelerator = "auto"                 # auto, kvm or tcg
 * templates = "/var/lib/rund/templates" # VM templates (a disk file system, not tmpfs); "off" boots every VM cold
 * spare_vms = 2                        # paused clones kept ready for the next starts; 0 for none
 * starts_at_once = 0                   # sandbox starts run at once, the rest wait their turn in order;
 *                                      # 0 (the default): as many as the daemon has CPUs
 * vm_uid_base = 2000000                # each sandbox's QEMU and helper run as a uid of its own above
 *                                      # this, in group vm_uid_base
 * jailer = "/usr/local/lib/rund/rund-jail" # what starts each QEMU and helper confined; the helper,
 *                                      # rund-helper, is installed beside it
 * guest_memory_mib = 64                # what a sized VM holds beyond its containers' memory limits
 *                                      # (the guest kernel and agent); 32..1024
 * writable_layer_mib = 256             # each sandbox's writable layer (its disk, the store's promise to
 *                                      # it); a pod asks for another with io.rund.writable-layer-mib
 * standby = true                       # keep a second daemon started and warm, waiting to take over at once
 *                                      # when the daemon dies or is stopped (a restart in ~0.2 s, not ~1 s)
 * fault = ""                           # tests only: "POINT=kill" or "POINT=fail" (FaultPoints)
 * </pre>
 */
public final class RundConfig {

    /** The file's shape; every field optional. */
    static final class File {
        String stateDir;
        String guestDir;
        String scratch;
        Integer poolSize;
        String cgroupPool;
        String accelerator;
        String templates;
        Integer spareVms;
        Integer startsAtOnce;
        Integer vmUidBase;
        String jailer;
        Integer guestMemoryMiB;
        Integer writableLayerMiB;
        Boolean standby;
        String fault;
    }

    /** Far above the uids of people and services, and of the usual user-namespace ranges (100000 + 65536 n). */
    static final int DEFAULT_VM_UID_BASE = 2_000_000;

    /** The guest kernel and agent with room to run: measured in docs/BENCHMARKS.md, "Pod overhead". */
    static final int DEFAULT_GUEST_MEMORY_MIB = 64;

    /** A sandbox's disk when its pod asks for none. */
    static final int DEFAULT_WRITABLE_LAYER_MIB = 256;

    private RundConfig() {}

    public static Daemon.Config load(Map<String, String> env) throws IOException {
        Path path = Path.of(env.getOrDefault("RUND_CONFIG", "/etc/rund/rund.toml"));
        File f = Files.exists(path) ? parse(path) : new File();
        String accel = pick(env, "RUND_ACCELERATOR", f.accelerator, "auto");
        if (!accel.equals("auto") && !accel.equals("kvm") && !accel.equals("tcg")) {
            throw new IOException(path + ": accelerator " + accel + " is not auto, kvm or tcg");
        }
        int pool = pickInt(env, "RUND_POOL_SIZE", f.poolSize, 8);
        if (pool < 1 || pool > 4096) {
            throw new IOException(path + ": pool_size " + pool + " is outside 1..4096");
        }
        int spares = pickInt(env, "RUND_SPARE_VMS", f.spareVms, 2);
        if (spares < 0 || spares > 64) {
            throw new IOException(path + ": spare_vms " + spares + " is outside 0..64");
        }
        int startsAtOnce = pickInt(env, "RUND_STARTS_AT_ONCE", f.startsAtOnce, 0);
        if (startsAtOnce < 0 || startsAtOnce > 1024) {
            throw new IOException(path + ": starts_at_once " + startsAtOnce + " is outside 0..1024 (0: one per CPU)");
        }
        if (startsAtOnce == 0) {
            startsAtOnce = Runtime.getRuntime().availableProcessors();
        }
        int uidBase = pickInt(env, "RUND_VM_UID_BASE", f.vmUidBase, DEFAULT_VM_UID_BASE);
        if (uidBase < 1000 || uidBase > Integer.MAX_VALUE - io.rund.vm.VmJail.UIDS) {
            // 0 once ran QEMU as root; a sandbox's helper reaches its VM's memory only as the VM's own uid.
            throw new IOException(path + ": vm_uid_base " + uidBase + " is not in 1000.."
                    + (Integer.MAX_VALUE - io.rund.vm.VmJail.UIDS)
                    + (uidBase == 0 ? " (VMs no longer run as root: each sandbox's helper runs as its VM's uid)" : ""));
        }
        int guestMiB = pickInt(env, "RUND_GUEST_MEMORY_MIB", f.guestMemoryMiB, DEFAULT_GUEST_MEMORY_MIB);
        if (guestMiB < 32 || guestMiB > 1024) {
            throw new IOException(path + ": guest_memory_mib " + guestMiB + " is outside 32..1024");
        }
        int layerMiB = pickInt(env, "RUND_WRITABLE_LAYER_MIB", f.writableLayerMiB, DEFAULT_WRITABLE_LAYER_MIB);
        if (layerMiB < io.rund.rootfs.WritableLayerStore.MIN_MIB || layerMiB > io.rund.rootfs.WritableLayerStore.MAX_MIB) {
            throw new IOException(path + ": writable_layer_mib " + layerMiB + " is outside "
                    + io.rund.rootfs.WritableLayerStore.MIN_MIB + ".." + io.rund.rootfs.WritableLayerStore.MAX_MIB);
        }
        String templates = pick(env, "RUND_TEMPLATES", f.templates, "/var/lib/rund/templates");
        if (!templates.equals("off") && !Path.of(templates).isAbsolute()) {
            throw new IOException(path + ": templates " + templates + " is neither an absolute path nor off");
        }
        return new Daemon.Config(Path.of(pick(env, "RUND_STATE_DIR", f.stateDir, "/run/rund")),
                Path.of(pick(env, "RUND_GUEST_DIR", f.guestDir, "/var/lib/rund/guest")),
                Path.of(pick(env, "RUND_SCRATCH", f.scratch, "/var/lib/rund/scratch")),
                pool, pick(env, "RUND_CGROUP_POOL", f.cgroupPool, "rund"),
                accel.equals("auto") ? null : accel, templates.equals("off") ? null : Path.of(templates), spares,
                uidBase, Path.of(pick(env, "RUND_JAILER", f.jailer, "/usr/local/lib/rund/rund-jail")),
                guestMiB, layerMiB, checkFault(path, pick(env, "RUND_FAULT", f.fault, "")), standby(path, env, f.standby),
                startsAtOnce);
    }

    private static boolean standby(Path path, Map<String, String> env, Boolean fromFile) throws IOException {
        String v = env.get("RUND_STANDBY");
        if (v == null) {
            return fromFile == null || fromFile;
        }
        if (!v.equals("true") && !v.equals("false")) {
            throw new IOException("RUND_STANDBY " + v + " is not true or false");
        }
        return v.equals("true");
    }

    /** A fault point as {@link io.rund.sandbox.lifecycle.FaultPoints#arm} takes it, or an error naming what is wrong. */
    private static String checkFault(Path path, String fault) throws IOException {
        String was = fault;
        try {
            io.rund.sandbox.lifecycle.FaultPoints.arm(fault);
        } catch (IllegalArgumentException e) {
            throw new IOException(path + ": " + e.getMessage(), e);
        } finally {
            io.rund.sandbox.lifecycle.FaultPoints.arm(null); // checked only; the daemon arms it
        }
        return was;
    }

    private static final String KNOWN = "state_dir, guest_dir, scratch, pool_size, cgroup_pool, accelerator, templates,"
            + " spare_vms, starts_at_once, vm_uid_base, jailer, guest_memory_mib, writable_layer_mib, standby, fault";

    /**
     * Reads the file with the TOML format's own parser, key by key. Mapping it onto a class by
     * reflection (Jackson's databind) costs ~150 ms in a JVM that has just started, and a
     * restarted daemon reads its configuration first of all.
     */
    static File parse(Path path) throws IOException {
        File f = new File();
        try (JsonParser p = new TomlFactory().createParser(path.toFile())) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                throw new IOException(path + ": not a TOML document");
            }
            for (JsonToken t = p.nextToken(); t == JsonToken.FIELD_NAME; t = p.nextToken()) {
                String key = p.currentName();
                JsonToken v = p.nextToken();
                switch (key) {
                    case "state_dir" -> f.stateDir = string(path, key, p, v);
                    case "guest_dir" -> f.guestDir = string(path, key, p, v);
                    case "scratch" -> f.scratch = string(path, key, p, v);
                    case "pool_size" -> f.poolSize = integer(path, key, p, v);
                    case "cgroup_pool" -> f.cgroupPool = string(path, key, p, v);
                    case "accelerator" -> f.accelerator = string(path, key, p, v);
                    case "templates" -> f.templates = string(path, key, p, v);
                    case "spare_vms" -> f.spareVms = integer(path, key, p, v);
                    case "starts_at_once" -> f.startsAtOnce = integer(path, key, p, v);
                    case "vm_uid_base" -> f.vmUidBase = integer(path, key, p, v);
                    case "jailer" -> f.jailer = string(path, key, p, v);
                    case "guest_memory_mib" -> f.guestMemoryMiB = integer(path, key, p, v);
                    case "writable_layer_mib" -> f.writableLayerMiB = integer(path, key, p, v);
                    case "standby" -> f.standby = bool(path, key, p, v);
                    case "fault" -> f.fault = string(path, key, p, v);
                    default -> throw new IOException(path + ": unknown key " + key + " (known: " + KNOWN + ")");
                }
            }
        } catch (com.fasterxml.jackson.core.JacksonException e) {
            throw new IOException(path + ": " + e.getOriginalMessage(), e);
        }
        return f;
    }

    private static String string(Path path, String key, JsonParser p, JsonToken v) throws IOException {
        if (v != JsonToken.VALUE_STRING) {
            throw new IOException(path + ": " + key + " must be a string, not " + shown(p, v));
        }
        return p.getText();
    }

    private static Integer integer(Path path, String key, JsonParser p, JsonToken v) throws IOException {
        if (v != JsonToken.VALUE_NUMBER_INT || p.getNumberType() != JsonParser.NumberType.INT) {
            throw new IOException(path + ": " + key + " must be a whole number, not " + shown(p, v));
        }
        return p.getIntValue();
    }

    private static Boolean bool(Path path, String key, JsonParser p, JsonToken v) throws IOException {
        if (v != JsonToken.VALUE_TRUE && v != JsonToken.VALUE_FALSE) {
            throw new IOException(path + ": " + key + " must be true or false, not " + shown(p, v));
        }
        return v == JsonToken.VALUE_TRUE;
    }

    private static String shown(JsonParser p, JsonToken v) throws IOException {
        return v == JsonToken.START_OBJECT ? "a table" : v == JsonToken.START_ARRAY ? "an array" : p.getText();
    }

    private static String pick(Map<String, String> env, String var, String fromFile, String fallback) {
        String v = env.get(var);
        return v != null ? v : fromFile != null ? fromFile : fallback;
    }

    /** {@link #pick} for a whole number: the environment's (which must be one), the file's, or the fallback. */
    private static int pickInt(Map<String, String> env, String var, Integer fromFile, int fallback) {
        String v = env.get(var);
        return v != null ? Integer.parseInt(v) : fromFile != null ? fromFile : fallback;
    }
}
