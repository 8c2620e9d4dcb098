package io.rund.rootfs.virtiofs;

import io.rund.rootfs.Syscalls.SyscallException;
import java.lang.foreign.MemorySegment;
import java.util.List;

/**
 * A guest's RAM as the front-end (QEMU) described it in SET_MEM_TABLE, reached through
 * the front-end process's own address space with process_vm_readv/writev. Reading
 * through the process, not through the region's file, is what lets a clone work: its RAM
 * is a private mapping of its template's file, and only QEMU's page tables know which
 * pages the clone has made its own.
 *
 * <p>Every guest address is checked against the table: a buffer that is not wholly
 * inside one region is refused, naming the address.
 */
final class GuestMemory {

    /** One region: guest physical [gpa, gpa+size) is front-end virtual [hva, hva+size). */
    record Region(long gpa, long size, long hva) {
        boolean holds(long addr, long len) {
            return Long.compareUnsigned(addr, gpa) >= 0 && Long.compareUnsigned(len, size) <= 0
                    && Long.compareUnsigned(addr - gpa, size - len) <= 0;
        }

        boolean holdsHva(long addr, long len) {
            return Long.compareUnsigned(addr, hva) >= 0 && Long.compareUnsigned(len, size) <= 0
                    && Long.compareUnsigned(addr - hva, size - len) <= 0;
        }
    }

    /** A guest address or length the table does not cover. */
    static final class BadAddressException extends Exception {
        private static final long serialVersionUID = 1L;

        BadAddressException(String message) {
            super(message);
        }
    }

    private final int pid;
    private final List<Region> regions;

    GuestMemory(int pid, List<Region> regions) {
        this.pid = pid;
        this.regions = List.copyOf(regions);
    }

    int pid() {
        return pid;
    }

    List<Region> regions() {
        return regions;
    }

    /** The front-end address of guest [gpa, gpa+len). */
    long translate(long gpa, long len) throws BadAddressException {
        for (Region r : regions) {
            if (r.holds(gpa, len)) {
                return r.hva() + (gpa - r.gpa());
            }
        }
        throw new BadAddressException("guest address 0x" + Long.toHexString(gpa) + "+" + len
                + " is outside the guest's memory " + describe());
    }

    /** Checks that front-end [hva, hva+len) is guest memory (ring addresses come as front-end addresses). */
    long checkHva(long hva, long len) throws BadAddressException {
        for (Region r : regions) {
            if (r.holdsHva(hva, len)) {
                return hva;
            }
        }
        throw new BadAddressException("ring address 0x" + Long.toHexString(hva) + "+" + len
                + " is outside the guest's memory " + describe());
    }

    void readHva(long hva, MemorySegment into) throws SyscallException {
        Posix.transfer(pid, into, hva, false);
    }

    void writeHva(long hva, MemorySegment from) throws SyscallException {
        Posix.transfer(pid, from, hva, true);
    }

    private String describe() {
        StringBuilder b = new StringBuilder("[");
        for (Region r : regions) {
            b.append(b.length() > 1 ? ", " : "").append("0x").append(Long.toHexString(r.gpa())).append("+0x")
                    .append(Long.toHexString(r.size()));
        }
        return b.append("]").toString();
    }
}
