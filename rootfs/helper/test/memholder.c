/* memholder: plays the part of a VM's QEMU for the helper's tests. Started by rund-jail
 * as the sandbox's uid with its connection to the helper on descriptor 3, it makes the
 * guest's RAM: a memfd of SIZE bytes mapped shared, prints "<address> <memfd>" and waits
 * to be killed. The test opens the memfd through /proc and maps it too, takes descriptor 3
 * with pidfd_getfd, and speaks vhost-user with it: the helper's SO_PEERCRED names this
 * process, whose memory it then reaches as it reaches QEMU's. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: memholder SIZE\n");
        return 2;
    }
    size_t size = strtoull(argv[1], NULL, 10);
    int fd = memfd_create("guest-ram", 0);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
        perror("memfd");
        return 1;
    }
    void *ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (ram == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    printf("%lu %d\n", (unsigned long)ram, fd);
    fflush(stdout);
    for (;;)
        pause();
}
