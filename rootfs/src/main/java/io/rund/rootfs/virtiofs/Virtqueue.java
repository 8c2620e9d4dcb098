package io.rund.rootfs.virtiofs;

import io.rund.rootfs.Syscalls.SyscallException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * One split virtqueue as vhost-user hands it over: the descriptor table, available and
 * used rings at front-end addresses, the index to continue from, and eventfds for kicks
 * (guest to us) and calls (us to guest). Indirect descriptors and event indices are not
 * offered, so neither appears. Not thread-safe: the device's lock guards it.
 */
final class Virtqueue {

    private static final int F_NEXT = 1;
    private static final int F_WRITE = 2;
    private static final int F_INDIRECT = 4;
    private static final int AVAIL_F_NO_INTERRUPT = 1;
    /** The most a request or a reply may span; FUSE's own limits are far below. */
    static final int MAX_BYTES = 4 << 20;

    /** Serves one request: its bytes in, at most {@code capacity} bytes out (null: no reply). */
    interface Handler {
        byte[] handle(byte[] request, int capacity);
    }

    /** The guest broke the ring's rules; the queue stops. */
    static final class BadChainException extends Exception {
        private static final long serialVersionUID = 1L;

        BadChainException(String message) {
            super(message);
        }
    }

    final int index;
    int size;
    long descHva;
    long availHva;
    long usedHva;
    int lastAvail;
    /** The used ring's index as we last wrote it; -1: read it from the ring when serving next (after a (re)start). */
    int usedIdx = -1;
    int kickFd = -1;
    int callFd = -1;
    boolean enabled;
    boolean broken;
    /** Kicked, or just given its kick eventfd or enabled, and not served since. */
    boolean pending;

    Virtqueue(int index) {
        this.index = index;
    }

    /** Addresses, size and a kick descriptor are known: the ring can run once enabled. */
    boolean ready() {
        return enabled && !broken && size > 0 && descHva != 0 && availHva != 0 && usedHva != 0 && kickFd >= 0;
    }

    /** Serves every chain the guest made available since the last call; returns how many. */
    int process(GuestMemory mem, Handler handler) throws SyscallException, GuestMemory.BadAddressException,
            BadChainException {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment u16 = arena.allocate(2, 2);
            MemorySegment desc = arena.allocate(16, 8);
            MemorySegment elem = arena.allocate(8, 4);
            mem.checkHva(availHva, 4 + 2L * size);
            mem.checkHva(usedHva, 4 + 8L * size);
            mem.checkHva(descHva, 16L * size);
            mem.readHva(availHva + 2, u16);
            int availIdx = Short.toUnsignedInt(u16.get(ValueLayout.JAVA_SHORT, 0));
            if (((availIdx - lastAvail) & 0xffff) > size) {
                throw new BadChainException("queue " + index + ": available index " + availIdx + " is more than "
                        + size + " ahead of " + lastAvail);
            }
            if (usedIdx < 0) {
                mem.readHva(usedHva + 2, u16);
                usedIdx = Short.toUnsignedInt(u16.get(ValueLayout.JAVA_SHORT, 0));
            }
            int served = 0;
            while (lastAvail != availIdx) {
                mem.readHva(availHva + 4 + 2L * (lastAvail % size), u16);
                int head = Short.toUnsignedInt(u16.get(ValueLayout.JAVA_SHORT, 0));
                int written;
                try (Arena request = Arena.ofConfined()) {
                    written = serve(mem, request, desc, head, handler);
                }
                elem.set(ValueLayout.JAVA_INT, 0, head);
                elem.set(ValueLayout.JAVA_INT, 4, written);
                mem.writeHva(usedHva + 4 + 8L * (usedIdx % size), elem);
                usedIdx = (usedIdx + 1) & 0xffff;
                u16.set(ValueLayout.JAVA_SHORT, 0, (short) usedIdx);
                mem.writeHva(usedHva + 2, u16); // after the element: the guest reads idx, then the element
                lastAvail = (lastAvail + 1) & 0xffff;
                served++;
            }
            if (served > 0 && callFd >= 0) {
                mem.readHva(availHva, u16);
                if ((u16.get(ValueLayout.JAVA_SHORT, 0) & AVAIL_F_NO_INTERRUPT) == 0) {
                    Posix.signal(callFd);
                }
            }
            return served;
        }
    }

    /** Reads the chain at {@code head}, runs the handler, writes its reply; returns bytes written. */
    private int serve(GuestMemory mem, Arena arena, MemorySegment desc, int head, Handler handler)
            throws SyscallException, GuestMemory.BadAddressException, BadChainException {
        if (head >= size) {
            throw new BadChainException("queue " + index + ": head descriptor " + head + " is outside the table of " + size);
        }
        long[] hva = new long[size]; // each buffer's front-end address, checked against the memory table
        int[] len = new int[size];
        boolean[] writable = new boolean[size];
        int n = 0;
        long readable = 0;
        long capacity = 0;
        int i = head;
        while (true) {
            if (n == size) {
                throw new BadChainException("queue " + index + ": descriptor chain from " + head + " loops");
            }
            mem.readHva(descHva + 16L * i, desc);
            int flags = Short.toUnsignedInt(desc.get(ValueLayout.JAVA_SHORT, 12));
            if ((flags & F_INDIRECT) != 0) {
                throw new BadChainException("queue " + index + ": descriptor " + i + " is indirect, which was not offered");
            }
            long gpa = desc.get(ValueLayout.JAVA_LONG, 0);
            len[n] = desc.get(ValueLayout.JAVA_INT, 8);
            writable[n] = (flags & F_WRITE) != 0;
            if (len[n] < 0) {
                throw new BadChainException("queue " + index + ": descriptor " + i + " has length " + Integer.toUnsignedString(len[n]));
            }
            hva[n] = mem.translate(gpa, len[n]);
            if (writable[n]) {
                capacity += len[n];
            } else if (capacity > 0) {
                throw new BadChainException("queue " + index + ": descriptor " + i + " is readable after a writable one");
            } else {
                readable += len[n];
            }
            n++;
            if ((flags & F_NEXT) == 0) {
                break;
            }
            i = Short.toUnsignedInt(desc.get(ValueLayout.JAVA_SHORT, 14));
            if (i >= size) {
                throw new BadChainException("queue " + index + ": next descriptor " + i + " is outside the table of " + size);
            }
        }
        if (readable > MAX_BYTES || capacity > MAX_BYTES) {
            throw new BadChainException("queue " + index + ": chain from " + head + " spans " + readable + " + " + capacity
                    + " bytes, more than " + MAX_BYTES);
        }
        MemorySegment in = arena.allocate(Math.max(1, readable));
        long off = 0;
        for (int k = 0; k < n && !writable[k]; k++) {
            if (len[k] > 0) {
                mem.readHva(hva[k], in.asSlice(off, len[k]));
            }
            off += len[k];
        }
        byte[] reply = handler.handle(in.asSlice(0, readable).toArray(ValueLayout.JAVA_BYTE), (int) capacity);
        if (reply == null) {
            return 0;
        }
        if (reply.length > capacity) {
            throw new IllegalStateException("reply of " + reply.length + " bytes for a buffer of " + capacity);
        }
        MemorySegment out = arena.allocateFrom(ValueLayout.JAVA_BYTE, reply);
        off = 0;
        for (int k = 0; k < n && off < reply.length; k++) {
            if (!writable[k]) {
                continue;
            }
            int chunk = (int) Math.min(len[k], reply.length - off);
            mem.writeHva(hva[k], out.asSlice(off, chunk));
            off += chunk;
        }
        return reply.length;
    }
}
