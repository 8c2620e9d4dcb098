package io.rund.sandbox.bench;

import io.rund.sandbox.agent.AgentClient;
import io.rund.testing.Trees;
import io.rund.vm.TestVms;
import io.rund.vm.Vm;
import io.rund.vm.VmConfig;
import io.rund.vm.qemu.QemuHypervisor;
import io.rund.vm.template.TemplateStore;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Clone vs cold boot, side by side in one run, under the same accelerator: time from
 * launch to the agent's first answer; PSS of the VMs' processes at 1 and 10 idle VMs; and
 * how many pages of the guest kernel's text a clone holds privately. Both kinds carry the
 * same devices, those of a sandbox: the agent's port, a virtio-fs device served by the
 * daemon's back-end (over an empty directory here) and a disk. Run by `hack/bench
 * template`; prints Markdown.
 */
public final class TemplateBench {

    private static final Path GUEST = Path.of(System.getProperty("rund.guest.dir", "/var/lib/rund/guest"));
    private static final int MIB = 128;
    private static final long DISK_BYTES = 256L << 20;
    private static QemuHypervisor hypervisor;
    private static Path work;
    private static final Map<Long, TestVms.Served> SERVED = new ConcurrentHashMap<>();

    public static void main(String[] args) throws Exception {
        int runs = args.length > 0 ? Integer.parseInt(args[0]) : 10;
        hypervisor = TestVms.jailed();
        work = Files.createTempDirectory(Path.of("/run"), "rund-bench-template-");
        Path store = Path.of("/dev/shm/rund-bench-templates-" + ProcessHandle.current().pid());
        try {
            TemplateStore templates = TemplateStore.open(store, hypervisor, AgentClient.ready(Duration.ofSeconds(60)));
            TemplateStore.Spec spec = new TemplateStore.Spec(GUEST.resolve("vmlinux"), GUEST.resolve("initramfs.cpio"), 1, MIB, DISK_BYTES);
            long b0 = System.nanoTime();
            TemplateStore.Template t = templates.get(spec);
            double buildMs = (System.nanoTime() - b0) / 1e6;

            double[] cold = new double[runs];
            double[] clone = new double[runs];
            double[] spare = new double[runs];
            for (int i = 0; i < runs; i++) { // alternating, so drift hits all alike
                cold[i] = startToAgent("cold-" + i, VmConfig.Ram.ANONYMOUS, true);
                clone[i] = startToAgent("clone-" + i, t.cloneRam(), true);
                spare[i] = spareToAgent("spare-" + i, t.cloneRam());
            }
            System.out.printf("accelerator %s; template built in %.0f ms; guest RAM %d MiB, 1 vCPU%n%n",
                    hypervisor.accelerator().kind(), buildMs, MIB);
            System.out.println("| start to the agent's first answer | runs | median ms | p99 ms |");
            System.out.println("|---|---:|---:|---:|");
            row("cold boot (memfd RAM)", cold);
            row("clone of a template (private file RAM, -incoming)", clone);
            row("spare clone (launched and loaded ahead, paused): share + resume", spare);
            System.out.printf("%nclone is %.1fx faster than cold boot, a spare clone %.1fx (medians)%n%n",
                    median(cold) / median(clone), median(cold) / median(spare));

            System.out.println("| idle VMs | cold: PSS per VM MiB | clone: PSS per VM MiB |");
            System.out.println("|---:|---:|---:|");
            for (int n : new int[] {1, 10, 30}) {
                System.out.printf("| %d | %.1f | %.1f |%n", n, pssPerVm(n, VmConfig.Ram.ANONYMOUS, "pc"),
                        pssPerVm(n, t.cloneRam(), "pk"));
            }

            List<Vm> one = new ArrayList<>();
            try {
                one.add(launch("text-clone", t.cloneRam()));
                agent("text-clone").close();
                int[] pages = kernelTextPages(one.getFirst().pid(), t.ram());
                System.out.printf("%nguest kernel text (%d pages of 4 KiB, physical 0x1000000..): in a clone after"
                        + " its agent answered, %d private (copied on write), %d shared with the template, %d untouched%n",
                        pages[0] + pages[1] + pages[2], pages[0], pages[1], pages[2]);
            } finally {
                one.forEach(TemplateBench::stop);
            }
        } finally {
            Trees.delete(work);
            Trees.delete(store);
        }
    }

    private static Vm launch(String id, VmConfig.Ram ram) throws Exception {
        return launch(id, ram, false);
    }

    /** A VM with a sandbox's devices; {@code paused}: a clone left loaded and stopped, its share still empty. */
    private static Vm launch(String id, VmConfig.Ram ram, boolean paused) throws Exception {
        Path dir = Files.createDirectories(work.resolve(id));
        Path disk = dir.resolve("disk");
        try (RandomAccessFile f = new RandomAccessFile(disk.toFile(), "rw")) {
            f.setLength(DISK_BYTES);
        }
        TestVms.Served served = TestVms.launch(hypervisor, id, dir, Files.createDirectories(dir.resolve("share")),
                (helper, host, uid) -> VmConfig.sandbox(id, dir, GUEST.resolve("vmlinux"), GUEST.resolve("initramfs.cpio"), 1,
                        MIB, disk, helper.socket(), host.socket(), ram, VmConfig.newTapName(), uid), paused);
        SERVED.put(served.vm().pid(), served);
        return served.vm();
    }

    private static void stop(Vm vm) {
        vm.stop(Duration.ofSeconds(5));
        TestVms.Served served = SERVED.remove(vm.pid());
        if (served != null) {
            served.close();
        }
    }

    private static AgentClient agent(String id) throws Exception {
        AgentClient a = AgentClient.connect(work.resolve(id).resolve("agent.sock"), Duration.ofSeconds(60), Duration.ofSeconds(10));
        a.health();
        return a;
    }

    private static double startToAgent(String id, VmConfig.Ram ram, boolean stop) throws Exception {
        long t0 = System.nanoTime();
        Vm vm = launch(id, ram);
        try (AgentClient a = agent(id)) {
            return (System.nanoTime() - t0) / 1e6;
        } finally {
            if (stop) {
                stop(vm);
                Trees.delete(work.resolve(id));
            }
        }
    }

    /** What a sandbox start does with a spare: resume it, reach the agent (its share is its helper's from the start). */
    private static double spareToAgent(String id, VmConfig.Ram ram) throws Exception {
        Vm vm = launch(id, ram, true);
        try {
            Thread.sleep(100); // the spare is idle before anybody takes it
            long t0 = System.nanoTime();
            vm.resume();
            try (AgentClient a = agent(id)) {
                return (System.nanoTime() - t0) / 1e6;
            }
        } finally {
            stop(vm);
            Trees.delete(work.resolve(id));
        }
    }

    /** n idle VMs at once, each with its agent answered; the sum of their processes' PSS over n. */
    private static double pssPerVm(int n, VmConfig.Ram ram, String prefix) throws Exception {
        List<Vm> vms = new ArrayList<>();
        try {
            for (int i = 0; i < n; i++) {
                vms.add(launch(prefix + n + "-" + i, ram));
                agent(prefix + n + "-" + i).close();
            }
            Thread.sleep(1000);
            long kib = 0;
            for (Vm vm : vms) {
                for (String line : Files.readAllLines(Path.of("/proc/" + vm.pid() + "/smaps_rollup"))) {
                    if (line.startsWith("Pss:")) {
                        kib += Long.parseLong(line.replaceAll("[^0-9]", ""));
                    }
                }
            }
            return kib / 1024.0 / n;
        } finally {
            vms.forEach(TemplateBench::stop);
            for (int i = 0; i < n; i++) {
                Trees.delete(work.resolve(prefix + n + "-" + i));
            }
        }
    }

    /**
     * Pages of the guest kernel's text (its first ELF load segment, at guest-physical
     * 16 MiB) in the clone's mapping of the template's RAM: [private, shared, untouched],
     * from /proc/PID/pagemap (present bit 63; bit 61 set for a file page, clear for an
     * anonymous one, which a copy-on-write of a private file mapping makes).
     */
    private static int[] kernelTextPages(long pid, Path ramFile) throws Exception {
        long base = -1;
        for (String line : Files.readAllLines(Path.of("/proc/" + pid + "/maps"))) {
            if (line.endsWith(ramFile.toString()) || line.contains(ramFile.toString() + " ")) {
                base = Long.parseUnsignedLong(line.substring(0, line.indexOf('-')), 16);
                break;
            }
        }
        if (base < 0) {
            throw new IllegalStateException("no mapping of " + ramFile + " in /proc/" + pid + "/maps");
        }
        long start = 0x1000000;
        long size = textSize();
        int[] counts = new int[3];
        try (RandomAccessFile pm = new RandomAccessFile("/proc/" + pid + "/pagemap", "r")) {
            for (long off = 0; off < size; off += 4096) {
                pm.seek(((base + start + off) / 4096) * 8);
                long e = Long.reverseBytes(pm.readLong());
                boolean present = (e >>> 63 & 1) == 1;
                boolean file = (e >>> 61 & 1) == 1;
                counts[!present ? 2 : file ? 1 : 0]++;
            }
        }
        return counts;
    }

    /** The size of vmlinux's first PT_LOAD segment (the text), from its ELF program headers. */
    private static long textSize() throws Exception {
        try (RandomAccessFile f = new RandomAccessFile(GUEST.resolve("vmlinux").toFile(), "r")) {
            f.seek(32);
            long phoff = Long.reverseBytes(f.readLong());
            f.seek(54);
            int phentsize = Short.reverseBytes(f.readShort()) & 0xffff;
            int phnum = Short.reverseBytes(f.readShort()) & 0xffff;
            for (int i = 0; i < phnum; i++) {
                f.seek(phoff + (long) i * phentsize);
                if (Integer.reverseBytes(f.readInt()) == 1) { // PT_LOAD
                    f.seek(phoff + (long) i * phentsize + 32);
                    return Long.reverseBytes(f.readLong()); // p_filesz
                }
            }
        }
        throw new IllegalStateException("vmlinux has no PT_LOAD segment");
    }

    private static double median(double[] v) {
        double[] s = v.clone();
        Arrays.sort(s);
        return s[(s.length - 1) / 2];
    }

    private static void row(String what, double[] ms) {
        double[] s = ms.clone();
        Arrays.sort(s);
        System.out.printf("| %s | %d | %.0f | %.0f |%n", what, s.length, s[(s.length - 1) / 2],
                s[Math.min(s.length - 1, (int) Math.ceil(s.length * 0.99) - 1)]);
    }
}
