package io.rund.sandbox.cgroup;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Where the pool's cgroups live on this host.
 *
 * <ul>
 *   <li>{@code V1}: one hierarchy per controller (this project's build machines): a pool
 *       cgroup is one directory in each of the cpu, cpuacct, memory and pids hierarchies,
 *       all with the same name. cgroup v1 lets a directory be renamed.</li>
 *   <li>{@code V2}: one unified hierarchy; a pool cgroup is one directory. cgroup v2 refuses
 *       rename, so a pool cgroup keeps its slot name and the sandbox's id is kept beside it.</li>
 * </ul>
 *
 * @param roots the pool's root directory in each hierarchy, by controller ("" for V2)
 */
public record CgroupLayout(Version version, Map<String, Path> roots, Set<String> controllers) {

    public enum Version {
        V1,
        V2
    }

    /** The controllers a sandbox's cgroup uses on a v1 host. */
    static final List<String> V1_CONTROLLERS = List.of("cpu", "cpuacct", "memory", "pids");

    /** The controllers a v2 host must offer. */
    static final List<String> V2_CONTROLLERS = List.of("cpu", "memory", "pids");

    public CgroupLayout {
        roots = Map.copyOf(roots);
        controllers = Set.copyOf(controllers);
    }

    /**
     * Reads /proc/self/mounts. A cgroup2 mount that offers the cpu, memory and pids
     * controllers makes a v2 host; otherwise the v1 hierarchies of the needed controllers
     * must all be mounted. (A hybrid host's cgroup2 may offer only leftovers such as
     * hugetlb: that is not enough.)
     */
    public static CgroupLayout detect(String poolName) throws CgroupException {
        List<String[]> mounts = new ArrayList<>();
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/mounts"))) {
                mounts.add(line.split(" "));
            }
        } catch (IOException e) {
            throw new CgroupException("read /proc/self/mounts: " + e.getMessage(), e);
        }
        for (String[] m : mounts) {
            if (m[2].equals("cgroup2")) {
                Set<String> available = v2Controllers(Path.of(m[1]));
                if (available.containsAll(V2_CONTROLLERS)) {
                    return v2(Path.of(m[1]), poolName);
                }
            }
        }
        Map<String, Path> roots = new LinkedHashMap<>();
        for (String controller : V1_CONTROLLERS) {
            for (String[] m : mounts) {
                if (m[2].equals("cgroup") && List.of(m[3].split(",")).contains(controller)) {
                    roots.put(controller, Path.of(m[1]).resolve(poolName));
                    break;
                }
            }
            if (!roots.containsKey(controller)) {
                throw new CgroupException("no cgroup v1 hierarchy with the " + controller
                        + " controller is mounted, and no cgroup2 hierarchy has controllers");
            }
        }
        return new CgroupLayout(Version.V1, roots, Set.copyOf(V1_CONTROLLERS));
    }

    /** A v2 layout under {@code mount} (also used on a cgroup2 mount without controllers). */
    public static CgroupLayout v2(Path mount, String poolName) throws CgroupException {
        return new CgroupLayout(Version.V2, Map.of("", mount.resolve(poolName)), v2Controllers(mount));
    }

    private static Set<String> v2Controllers(Path mount) throws CgroupException {
        try {
            String s = Files.readString(mount.resolve("cgroup.controllers")).trim();
            return s.isEmpty() ? Set.of() : Set.of(s.split(" "));
        } catch (IOException e) {
            throw new CgroupException("read " + mount.resolve("cgroup.controllers") + ": " + e.getMessage(), e);
        }
    }
}
