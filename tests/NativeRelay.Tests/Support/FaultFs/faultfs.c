/*
 * faultfs: an LD_PRELOAD shim that makes the disk fail under a running relay, for the fault
 * injection tests (issue 30). It wraps the libc calls through which the relay writes and syncs
 * its spool (write, pwrite, pwritev, fsync, fdatasync, fallocate) and, for files under
 * FAULTFS_PREFIX only, fails them with EIO or ENOSPC as the control file says.
 *
 * Why a preload and not a fault-injecting FASTER device: the point is to test the binary that
 * ships, through the same system calls, with nothing in it that knows about tests.
 *
 * Environment:
 *   FAULTFS_PREFIX   path prefix of the files to fail (the spool directory)
 *   FAULTFS_CONTROL  a file read before every wrapped call on such a file; absent or empty means no
 *                    faults. One line: "OPS ERRNO RATE [SEED]"
 *                      OPS    write | sync | alloc | all (write covers write, pwrite, pwritev)
 *                      ERRNO  EIO | ENOSPC
 *                      RATE   0..1, the share of matching calls that fail (1 = every one); the
 *                             choice is a seeded pseudo-random sequence, so runs repeat
 *   FAULTFS_LOG      a file to which one line per injected fault is appended ("pwrite64 EIO path")
 *
 * A failed write writes nothing (returns -1 before calling libc), which is what a device error
 * on a write-through (O_DSYNC) file looks like to the caller; a failed fsync also leaves the
 * data where libc put it, which is the case PostgreSQL learned about: the caller must not retry
 * the sync as if the data were safe.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

enum { OP_WRITE = 1, OP_SYNC = 2, OP_ALLOC = 4 };

static unsigned long long rng_state;
static int rng_seeded;

/* Raw syscalls only below this line for our own bookkeeping: calling the wrapped functions
 * would recurse. */
static ssize_t raw_read_file(const char *path, char *buf, size_t size)
{
    int fd = (int)syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = syscall(SYS_read, fd, buf, size - 1);
    syscall(SYS_close, fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return n;
}

static void log_fault(const char *call, int err, const char *path)
{
    const char *log = getenv("FAULTFS_LOG");
    if (!log)
        return;
    char line[4352];
    int n = snprintf(line, sizeof line, "%s %s %s\n", call, err == ENOSPC ? "ENOSPC" : "EIO", path);
    if (n <= 0)
        return;
    int fd = (int)syscall(SYS_openat, AT_FDCWD, log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    syscall(SYS_write, fd, line, (size_t)n);
    syscall(SYS_close, fd);
}

/* 0: let the call through; otherwise the errno to fail it with. */
static int fault_for(int fd, int op, const char *call)
{
    const char *prefix = getenv("FAULTFS_PREFIX");
    const char *control = getenv("FAULTFS_CONTROL");
    if (!prefix || !control || fd < 0)
        return 0;
    char spec[256];
    if (raw_read_file(control, spec, sizeof spec) <= 0)
        return 0;
    char ops[32], err[32];
    double rate = 0;
    unsigned long long seed = 1;
    int fields = sscanf(spec, "%31s %31s %lf %llu", ops, err, &rate, &seed);
    if (fields < 3)
        return 0;
    int mask = strcmp(ops, "write") == 0 ? OP_WRITE
             : strcmp(ops, "sync") == 0 ? OP_SYNC
             : strcmp(ops, "alloc") == 0 ? OP_ALLOC
             : strcmp(ops, "all") == 0 ? (OP_WRITE | OP_SYNC | OP_ALLOC) : 0;
    if (!(mask & op))
        return 0;
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = syscall(SYS_readlink, link, path, sizeof path - 1);
    if (n <= 0)
        return 0;
    path[n] = 0;
    if (strncmp(path, prefix, strlen(prefix)) != 0)
        return 0;
    if (rate < 1.0)
    {
        if (!rng_seeded)
        {
            rng_state = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            rng_seeded = 1;
        }
        /* A race between threads only perturbs the sequence; that is fine for a test. */
        rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
        double draw = (double)(rng_state >> 11) / (double)(1ULL << 53);
        if (draw >= rate)
            return 0;
    }
    int e = strcmp(err, "ENOSPC") == 0 ? ENOSPC : EIO;
    log_fault(call, e, path);
    return e;
}

/* libc's own function of that name, found once. */
#define REAL(name) \
    static __typeof__(name) *real_##name; \
    if (!real_##name) real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

#define FAIL_IF(fd, op, call) \
    do { int e_ = fault_for((fd), (op), (call)); if (e_) { errno = e_; return -1; } } while (0)

ssize_t write(int fd, const void *buf, size_t count)
{
    REAL(write);
    FAIL_IF(fd, OP_WRITE, "write");
    return real_write(fd, buf, count);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    REAL(pwrite);
    FAIL_IF(fd, OP_WRITE, "pwrite");
    return real_pwrite(fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset)
{
    REAL(pwrite64);
    FAIL_IF(fd, OP_WRITE, "pwrite64");
    return real_pwrite64(fd, buf, count, offset);
}

ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
    REAL(pwritev);
    FAIL_IF(fd, OP_WRITE, "pwritev");
    return real_pwritev(fd, iov, iovcnt, offset);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt, off_t offset)
{
    REAL(pwritev64);
    FAIL_IF(fd, OP_WRITE, "pwritev64");
    return real_pwritev64(fd, iov, iovcnt, offset);
}

int fsync(int fd)
{
    REAL(fsync);
    FAIL_IF(fd, OP_SYNC, "fsync");
    return real_fsync(fd);
}

int fdatasync(int fd)
{
    REAL(fdatasync);
    FAIL_IF(fd, OP_SYNC, "fdatasync");
    return real_fdatasync(fd);
}

int fallocate(int fd, int mode, off_t offset, off_t len)
{
    REAL(fallocate);
    FAIL_IF(fd, OP_ALLOC, "fallocate");
    return real_fallocate(fd, mode, offset, len);
}

int fallocate64(int fd, int mode, off_t offset, off_t len)
{
    REAL(fallocate64);
    FAIL_IF(fd, OP_ALLOC, "fallocate64");
    return real_fallocate64(fd, mode, offset, len);
}
