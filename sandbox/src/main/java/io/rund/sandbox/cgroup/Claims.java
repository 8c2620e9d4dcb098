package io.rund.sandbox.cgroup;

import java.io.IOException;
import java.lang.System.Logger.Level;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Supplier;

/**
 * How the pool records that a sandbox holds a cgroup, the one thing cgroup v1 and v2 do
 * differently here: on v1 the free slot is renamed to the sandbox's id in every hierarchy
 * (and renamed back to a new free name at release); on v2, which refuses rename, the slot
 * keeps its name and the claim is a file of the claims directory. Everything else of the
 * pool is the same for both.
 */
sealed interface Claims permits Claims.Renames, Claims.Files {

    String FREE = "free-";

    /** The recording for {@code layout}'s version. */
    static Claims of(CgroupLayout layout, Path claimsDir) {
        return layout.version() == CgroupLayout.Version.V2 ? new Files(layout, claimsDir) : new Renames(layout);
    }

    /** Makes what claims need before the pool is read (v2: the controllers, the claims directory). */
    void prepare() throws IOException;

    /**
     * The pool's cgroups as they are on disk, by directory name: the sandbox id that claims
     * each, or null for a free one. Reads only; an absent pool is empty.
     */
    Map<String, String> slots() throws IOException;

    /** Records that {@code sandboxId} holds free slot {@code slot}; on failure nothing is recorded. */
    Cgroup take(String slot, String sandboxId) throws CgroupException;

    /** Drops {@code cgroup}'s claim; returns the free name its slot has now ({@code freshName} gives one if needed). */
    String giveBack(Cgroup cgroup, Supplier<String> freshName) throws CgroupException;

    /** The directory of cgroup {@code name} in each hierarchy. */
    static Map<String, Path> dirs(CgroupLayout layout, String name) {
        Map<String, Path> d = new LinkedHashMap<>();
        layout.roots().forEach((controller, root) -> d.put(controller, root.resolve(name)));
        return d;
    }

    /** The directories of the pool's first hierarchy, sorted: every hierarchy has the same. */
    private static List<Path> entries(CgroupLayout layout) throws IOException {
        Path first = layout.roots().values().iterator().next();
        if (!java.nio.file.Files.isDirectory(first)) {
            return List.of();
        }
        try (java.util.stream.Stream<Path> s = java.nio.file.Files.list(first)) {
            return s.filter(java.nio.file.Files::isDirectory).sorted().toList();
        }
    }

    /** v1: a claimed cgroup is named by its sandbox in every hierarchy. */
    record Renames(CgroupLayout layout) implements Claims {

        private static final System.Logger LOG = System.getLogger(Claims.class.getName());

        @Override
        public void prepare() {}

        @Override
        public Map<String, String> slots() throws IOException {
            Map<String, String> slots = new LinkedHashMap<>();
            for (Path e : entries(layout)) {
                String name = e.getFileName().toString();
                slots.put(name, name.startsWith(FREE) ? null : name);
            }
            return slots;
        }

        @Override
        public Cgroup take(String slot, String sandboxId) throws CgroupException {
            List<String> renamed = new ArrayList<>();
            Map<String, Path> from = dirs(layout, slot);
            Map<String, Path> to = dirs(layout, sandboxId);
            try {
                for (String controller : from.keySet()) {
                    java.nio.file.Files.move(from.get(controller), to.get(controller), StandardCopyOption.ATOMIC_MOVE);
                    renamed.add(controller);
                }
            } catch (FileAlreadyExistsException e) {
                undo(renamed, to, from);
                throw new CgroupException("claim a cgroup for sandbox " + sandboxId + ": " + e.getFile() + " already exists", e);
            } catch (IOException e) {
                undo(renamed, to, from);
                throw new CgroupException("rename " + slot + " to " + sandboxId + ": " + e.getMessage(), e);
            }
            return new Cgroup(layout, sandboxId, sandboxId, to);
        }

        private static void undo(List<String> renamed, Map<String, Path> to, Map<String, Path> from) {
            for (String controller : renamed) {
                try {
                    java.nio.file.Files.move(to.get(controller), from.get(controller), StandardCopyOption.ATOMIC_MOVE);
                } catch (IOException e) {
                    LOG.log(Level.WARNING, "cgroup pool: could not rename {0} back: {1}", to.get(controller), e.getMessage());
                }
            }
        }

        @Override
        public String giveBack(Cgroup cgroup, Supplier<String> freshName) throws CgroupException {
            String slot = freshName.get();
            Map<String, Path> from = dirs(layout, cgroup.slot());
            Map<String, Path> to = dirs(layout, slot);
            for (String controller : from.keySet()) {
                try {
                    java.nio.file.Files.move(from.get(controller), to.get(controller), StandardCopyOption.ATOMIC_MOVE);
                } catch (NoSuchFileException e) {
                    // Already renamed by an earlier, interrupted release.
                } catch (AtomicMoveNotSupportedException e) {
                    throw new CgroupException("rename " + from.get(controller) + ": " + e.getMessage(), e);
                } catch (IOException e) {
                    throw new CgroupException("rename " + from.get(controller) + " to " + slot + ": " + e.getMessage(), e);
                }
            }
            return slot;
        }
    }

    /** v2: a slot keeps its name; its claim is the file {@code claimsDir/<slot>} holding the sandbox's id. */
    record Files(CgroupLayout layout, Path claimsDir) implements Claims {

        @Override
        public void prepare() throws IOException {
            Path root = layout.roots().get("");
            StringBuilder enable = new StringBuilder();
            for (String c : CgroupLayout.V2_CONTROLLERS) {
                if (layout.controllers().contains(c)) {
                    enable.append(enable.isEmpty() ? "" : " ").append('+').append(c);
                }
            }
            if (!enable.isEmpty()) {
                java.nio.file.Files.writeString(root.getParent().resolve("cgroup.subtree_control"), enable);
                java.nio.file.Files.writeString(root.resolve("cgroup.subtree_control"), enable);
            }
            java.nio.file.Files.createDirectories(claimsDir);
        }

        @Override
        public Map<String, String> slots() throws IOException {
            Map<String, String> slots = new LinkedHashMap<>();
            for (Path e : entries(layout)) {
                String name = e.getFileName().toString();
                if (name.startsWith(FREE)) {
                    Path claim = claimsDir.resolve(name);
                    slots.put(name, java.nio.file.Files.exists(claim) ? java.nio.file.Files.readString(claim).trim() : null);
                }
            }
            return slots;
        }

        @Override
        public Cgroup take(String slot, String sandboxId) throws CgroupException {
            try {
                Path tmp = claimsDir.resolve(slot + ".tmp");
                java.nio.file.Files.writeString(tmp, sandboxId);
                java.nio.file.Files.move(tmp, claimsDir.resolve(slot), StandardCopyOption.ATOMIC_MOVE);
            } catch (IOException e) {
                throw new CgroupException("record claim of " + slot + " for " + sandboxId + ": " + e.getMessage(), e);
            }
            return new Cgroup(layout, sandboxId, slot, dirs(layout, slot));
        }

        @Override
        public String giveBack(Cgroup cgroup, Supplier<String> freshName) throws CgroupException {
            try {
                java.nio.file.Files.deleteIfExists(claimsDir.resolve(cgroup.slot()));
            } catch (IOException e) {
                throw new CgroupException("drop the claim of " + cgroup.slot() + ": " + e.getMessage(), e);
            }
            return cgroup.slot();
        }
    }
}
