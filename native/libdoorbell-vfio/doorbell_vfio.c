/* libdoorbell-vfio: LD_PRELOAD library that makes the devices of a `doorbell serve` board appear to an unmodified
 * program as Linux VFIO devices. /dev/vfio/vfio, /dev/vfio/$GROUP and device fds become placeholder descriptors
 * whose open/close/ioctl/pread/pwrite/mmap/munmap/dup travel to the server; ioctl arguments travel as bytes and the
 * server's byte-exact VFIO ABI answers them. Request numbers come from the system's <linux/vfio.h>. The sysfs a VFIO
 * program reads is redirected to the tree the server writes (<socket>.sysfs). BAR mmaps are PROT_NONE reservations
 * whose faults are decoded (x86_decode.c) and performed on the server. Every other path and descriptor passes
 * through untouched. Environment: DOORBELL_SOCKET (required to do anything), DOORBELL_SYSFS (optional root),
 * DOORBELL_TRACE (set: each trapped BAR access is printed to stderr as `pid@seconds.micros:doorbell_vfio_mmio_*`, the
 * format of QEMU's log trace backend, so it lines up with QEMU's -trace output and `doorbell serve --trace`). */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/vfio.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <sys/un.h>
#include <ucontext.h>
#include <unistd.h>

#include "protocol.h"
#include "x86_decode.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_FD 65536
#define MAX_ARG (64u << 10)

/* ---------------------------------------------------------------- real functions */
#define REAL(name) static __typeof__(name) *real_##name
REAL(open); REAL(open64); REAL(openat); REAL(openat64); REAL(close); REAL(ioctl); REAL(pread); REAL(pwrite);
REAL(pread64); REAL(pwrite64); REAL(read); REAL(write); REAL(lseek); REAL(mmap); REAL(mmap64); REAL(munmap); REAL(dup); REAL(dup2);
REAL(dup3); REAL(fcntl); REAL(fopen); REAL(fopen64); REAL(stat); REAL(lstat); REAL(stat64); REAL(lstat64);
REAL(fstatat); REAL(fstatat64); REAL(access); REAL(faccessat); REAL(readlink); REAL(readlinkat); REAL(realpath);
REAL(opendir); REAL(statx); REAL(sigaction);

static void resolve(void)
{
	static int done;
	if (__atomic_load_n(&done, __ATOMIC_ACQUIRE)) return;
#define R(name) real_##name = (__typeof__(real_##name))dlsym(RTLD_NEXT, #name)
	R(open); R(open64); R(openat); R(openat64); R(close); R(ioctl); R(pread); R(pwrite); R(pread64); R(pwrite64);
	R(read); R(write); R(lseek); R(mmap); R(mmap64); R(munmap); R(dup); R(dup2); R(dup3); R(fcntl); R(fopen); R(fopen64);
	R(stat); R(lstat); R(stat64); R(lstat64); R(fstatat); R(fstatat64); R(access); R(faccessat); R(readlink);
	R(readlinkat); R(realpath); R(opendir); R(statx); R(sigaction);
#undef R
	__atomic_store_n(&done, 1, __ATOMIC_RELEASE);
}

/* ---------------------------------------------------------------- state */
enum kind { K_CONTAINER = 1, K_GROUP = 2, K_DEVICE = 3 };
struct dbfile { int sfd; int kind; int refs; uint64_t pos; };
static struct dbfile *g_files[MAX_FD];
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;   /* socket */
static pthread_mutex_t g_tlock = PTHREAD_MUTEX_INITIALIZER;  /* tables */
static int g_sock = -1;
static pid_t g_pid; /* this process (set at load and in a forked child): no getpid(2) per request */

struct barmap { uintptr_t start, end; int prot; };
#define MAX_MAPS 256
static struct barmap g_maps[MAX_MAPS];
static int g_nmaps;
static struct sigaction g_old_segv;
static int g_segv_installed;

static void die(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > 0) { resolve(); real_write(2, buf, n < (int)sizeof buf ? (size_t)n : sizeof buf - 1); }
}

static struct dbfile *lookup(int fd)
{
	if (fd < 0 || fd >= MAX_FD) return NULL;
	return __atomic_load_n(&g_files[fd], __ATOMIC_ACQUIRE);
}

/* ---------------------------------------------------------------- safe user copies (EFAULT, not a crash) */
static ssize_t self_read(void *dst, const void *src, size_t n)
{
	struct iovec l = { dst, n }, r = { (void *)src, n };
	return process_vm_readv(g_pid, &l, 1, &r, 1, 0);
}

static ssize_t self_write(void *dst, const void *src, size_t n)
{
	struct iovec l = { (void *)src, n }, r = { dst, n };
	return process_vm_writev(g_pid, &l, 1, &r, 1, 0);
}

/* ---------------------------------------------------------------- connection */
static const char *socket_path(void) { return getenv("DOORBELL_SOCKET"); }

static int have_cap_ipc_lock(void)
{
	resolve();
	int fd = real_open("/proc/self/status", O_RDONLY | O_CLOEXEC);
	if (fd < 0) return 0;
	char buf[4096];
	ssize_t n = real_read(fd, buf, sizeof buf - 1);
	real_close(fd);
	if (n <= 0) return 0;
	buf[n] = 0;
	char *p = strstr(buf, "CapEff:");
	if (!p) return 0;
	unsigned long long caps = strtoull(p + 7, NULL, 16);
	return (caps >> 14) & 1; /* CAP_IPC_LOCK */
}

static int64_t rpc_locked(uint32_t op, int fd, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, const void *payload,
			  uint32_t plen, const int *fds, int nfds, void *rbuf, uint32_t rcap, uint32_t *rlen);

static int connect_locked(void)
{
	/* a forked child never sees the parent's connection: after_fork_child drops it (a system call per request to
	   compare pids cost about 1 us of the trapped store's path on a paravirtualized machine) */
	if (g_sock >= 0) return 0;
	const char *path = socket_path();
	if (!path) return -ENOENT;
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0) return -errno;
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof a.sun_path) { real_close(s); return -ENAMETOOLONG; }
	strcpy(a.sun_path, path);
	if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
		int e = errno;
		real_close(s);
		die("libdoorbell-vfio: cannot connect to doorbell serve at %s: %s\n", path, strerror(e));
		return -ENOENT;
	}
	int hi = real_fcntl(s, F_DUPFD_CLOEXEC, 900); /* out of the way of programs that dup2 onto low numbers */
	if (hi >= 0) { real_close(s); s = hi; }
	g_sock = s;
	struct rlimit rl;
	uint64_t memlock = ~0ull;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) memlock = rl.rlim_cur;
	char root[PATH_MAX];
	uint32_t rlen = 0;
	int64_t r = rpc_locked(DB_HELLO, -1, memlock, have_cap_ipc_lock(), DB_PROTOCOL_VERSION, 0, NULL, 0, NULL, 0, root,
			       sizeof root - 1, &rlen);
	if (r < 0) { real_close(g_sock); g_sock = -1; return (int)r; }
	return 0;
}

static int64_t rpc_locked(uint32_t op, int fd, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, const void *payload,
			  uint32_t plen, const int *fds, int nfds, void *rbuf, uint32_t rcap, uint32_t *rlen)
{
	struct db_request h = { op, fd, a0, a1, a2, a3, plen, 0 };
	struct iovec iov[2] = { { &h, sizeof h }, { (void *)payload, plen } };
	union { struct cmsghdr c; char buf[CMSG_SPACE(sizeof(int) * DB_MAX_FDS)]; } ctl;
	struct msghdr m = { .msg_iov = iov, .msg_iovlen = plen ? 2 : 1 };
	if (nfds > 0) {
		if (nfds > DB_MAX_FDS) return -EINVAL;
		memset(&ctl, 0, sizeof ctl);
		m.msg_control = ctl.buf;
		m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
	}
	ssize_t n;
	do n = sendmsg(g_sock, &m, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
	if (n < 0) return -EIO;
	if (op == DB_MMIO_WRITE_POSTED) return 0; /* posted: the store retires without waiting for the device */
	struct db_reply rep;
	struct iovec riov[2] = { { &rep, sizeof rep }, { rbuf, rcap } };
	struct msghdr rm = { .msg_iov = riov, .msg_iovlen = rcap ? 2 : 1 };
	do n = recvmsg(g_sock, &rm, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
	if (n < (ssize_t)sizeof rep) {
		die("libdoorbell-vfio: lost the connection to doorbell serve\n");
		return -EIO;
	}
	if (rlen) *rlen = rep.payload_len < rcap ? rep.payload_len : rcap;
	return rep.ret;
}

static int64_t rpc(uint32_t op, int fd, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, const void *payload,
		   uint32_t plen, const int *fds, int nfds, void *rbuf, uint32_t rcap, uint32_t *rlen)
{
	resolve();
	int saved = errno;
	pthread_mutex_lock(&g_lock);
	int64_t r = connect_locked();
	if (r == 0) r = rpc_locked(op, fd, a0, a1, a2, a3, payload, plen, fds, nfds, rbuf, rcap, rlen);
	pthread_mutex_unlock(&g_lock);
	errno = saved;
	return r;
}

/* ---------------------------------------------------------------- sysfs redirection */
static char g_root[PATH_MAX];
static size_t g_rootlen;
static int g_root_state; /* 0 unknown, 1 set, -1 none */

static const char *sysfs_root(void)
{
	if (g_root_state == 0) {
		const char *r = getenv("DOORBELL_SYSFS");
		char tmp[PATH_MAX];
		if (!r && socket_path()) { snprintf(tmp, sizeof tmp, "%s.sysfs", socket_path()); r = tmp; }
		resolve();
		if (r && real_realpath(r, g_root)) { g_rootlen = strlen(g_root); g_root_state = 1; }
		else g_root_state = -1;
	}
	return g_root_state == 1 ? g_root : NULL;
}

static int has_prefix(const char *p, const char *pre)
{
	size_t n = strlen(pre);
	return strncmp(p, pre, n) == 0 && (p[n] == 0 || p[n] == '/');
}

/* The path in the server's tree for a sysfs or /dev/vfio path it describes, or the path itself. */
static const char *redirect(const char *path, char *buf, size_t n)
{
	static const char *const whole[] = { "/sys/bus/pci/devices", "/sys/bus/pci/drivers/vfio-pci", "/sys/kernel/iommu_groups",
		"/sys/bus/platform/devices", "/sys/bus/platform/drivers/vfio-platform", "/dev/vfio", NULL };
	if (!path || path[0] != '/' || (strncmp(path, "/sys/", 5) != 0 && strncmp(path, "/dev/vfio", 9) != 0)) return path;
	const char *root = sysfs_root();
	if (!root) return path;
	for (int i = 0; whole[i]; i++)
		if (has_prefix(path, whole[i])) { snprintf(buf, n, "%s%s", root, path); return buf; }
	if (strncmp(path, "/sys/devices/", 13) == 0) {
		/* /sys/devices/<parent>/<device>...: ours when the device directory exists in the tree */
		const char *p = path + 13;
		const char *s1 = strchr(p, '/');
		if (!s1) return path;
		const char *s2 = strchr(s1 + 1, '/');
		size_t len = s2 ? (size_t)(s2 - path) : strlen(path);
		char dev[PATH_MAX];
		snprintf(dev, sizeof dev, "%s%.*s", root, (int)len, path);
		struct stat st;
		if (real_lstat(dev, &st) == 0) { snprintf(buf, n, "%s%s", root, path); return buf; }
	}
	return path;
}

#define REDIRECT(p) char rbuf_[PATH_MAX]; resolve(); p = redirect(p, rbuf_, sizeof rbuf_)

EXPORT FILE *fopen(const char *path, const char *mode) { REDIRECT(path); return real_fopen(path, mode); }
EXPORT FILE *fopen64(const char *path, const char *mode) { REDIRECT(path); return real_fopen64(path, mode); }
EXPORT int stat(const char *path, struct stat *st) { REDIRECT(path); return real_stat(path, st); }
EXPORT int lstat(const char *path, struct stat *st) { REDIRECT(path); return real_lstat(path, st); }
EXPORT int stat64(const char *path, struct stat64 *st) { REDIRECT(path); return real_stat64(path, st); }
EXPORT int lstat64(const char *path, struct stat64 *st) { REDIRECT(path); return real_lstat64(path, st); }
EXPORT int fstatat(int dfd, const char *path, struct stat *st, int fl) { REDIRECT(path); return real_fstatat(dfd, path, st, fl); }
EXPORT int fstatat64(int dfd, const char *path, struct stat64 *st, int fl) { REDIRECT(path); return real_fstatat64(dfd, path, st, fl); }
EXPORT int statx(int dfd, const char *path, int fl, unsigned mask, struct statx *st) { REDIRECT(path); return real_statx(dfd, path, fl, mask, st); }
EXPORT int access(const char *path, int mode) { REDIRECT(path); return real_access(path, mode); }
EXPORT int faccessat(int dfd, const char *path, int mode, int fl) { REDIRECT(path); return real_faccessat(dfd, path, mode, fl); }
EXPORT ssize_t readlink(const char *path, char *buf, size_t n) { REDIRECT(path); return real_readlink(path, buf, n); }
EXPORT ssize_t readlinkat(int dfd, const char *path, char *buf, size_t n) { REDIRECT(path); return real_readlinkat(dfd, path, buf, n); }
EXPORT DIR *opendir(const char *path) { REDIRECT(path); return real_opendir(path); }

EXPORT char *realpath(const char *path, char *resolved)
{
	char buf[PATH_MAX];
	resolve();
	const char *p = redirect(path, buf, sizeof buf);
	if (p == path) return real_realpath(path, resolved);
	char tmp[PATH_MAX];
	if (!real_realpath(p, tmp)) return NULL;
	const char *out = tmp;
	if (g_rootlen && strncmp(tmp, g_root, g_rootlen) == 0) out = tmp + g_rootlen;
	if (!resolved && !(resolved = malloc(PATH_MAX))) { errno = ENOMEM; return NULL; }
	snprintf(resolved, PATH_MAX, "%s", *out ? out : "/");
	return resolved;
}
EXPORT char *__realpath_chk(const char *path, char *resolved, size_t n) { (void)n; return realpath(path, resolved); }
EXPORT char *canonicalize_file_name(const char *path) { return realpath(path, NULL); }
EXPORT ssize_t __readlink_chk(const char *path, char *buf, size_t len, size_t n) { (void)n; return readlink(path, buf, len); }

/* ---------------------------------------------------------------- descriptors */
static int install(int sfd, int kind, int cloexec)
{
	int fd = real_open("/dev/null", O_RDWR | (cloexec ? O_CLOEXEC : 0));
	if (fd < 0 || fd >= MAX_FD) {
		int e = fd < 0 ? errno : EMFILE;
		if (fd >= 0) real_close(fd);
		rpc(DB_CLOSE, sfd, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL);
		errno = e;
		return -1;
	}
	struct dbfile *f = calloc(1, sizeof *f);
	f->sfd = sfd;
	f->kind = kind;
	f->refs = 1;
	__atomic_store_n(&g_files[fd], f, __ATOMIC_RELEASE);
	return fd;
}

static void unref(struct dbfile *f)
{
	pthread_mutex_lock(&g_tlock);
	int last = --f->refs == 0;
	pthread_mutex_unlock(&g_tlock);
	if (last) {
		rpc(DB_CLOSE, f->sfd, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL);
		free(f);
	}
}

/* Forget what an fd number referred to (it was closed, or is about to be reused by dup2). */
static void forget(int fd)
{
	if (fd < 0 || fd >= MAX_FD) return;
	struct dbfile *f = __atomic_exchange_n(&g_files[fd], NULL, __ATOMIC_ACQ_REL);
	if (f) unref(f);
}

static void share(int newfd, struct dbfile *f)
{
	if (newfd < 0 || newfd >= MAX_FD || !f) return;
	pthread_mutex_lock(&g_tlock);
	f->refs++;
	pthread_mutex_unlock(&g_tlock);
	struct dbfile *old = __atomic_exchange_n(&g_files[newfd], f, __ATOMIC_ACQ_REL);
	if (old) unref(old);
}

static int vfio_open(const char *path, int flags)
{
	const char *rest = path + strlen("/dev/vfio/");
	int64_t r;
	int kind;
	if (strcmp(rest, "vfio") == 0) { r = rpc(DB_OPEN, -1, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL); kind = K_CONTAINER; }
	else {
		char *end;
		long id = strtol(rest, &end, 10);
		if (!*rest || *end || id < 0) { errno = ENOENT; return -1; }
		r = rpc(DB_OPEN, -1, 1, (uint64_t)id, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL);
		kind = K_GROUP;
	}
	if (r < 0) { errno = (int)-r; return -1; }
	return install((int)r, kind, (flags & O_CLOEXEC) != 0);
}

static int is_vfio_path(const char *p) { return p && strncmp(p, "/dev/vfio/", 10) == 0 && socket_path(); }

static int do_openat(int dfd, const char *path, int flags, mode_t mode, int large)
{
	resolve();
	if (is_vfio_path(path)) return vfio_open(path, flags);
	char buf[PATH_MAX];
	path = redirect(path, buf, sizeof buf);
	return large ? real_openat64(dfd, path, flags, mode) : real_openat(dfd, path, flags, mode);
}

#define MODE_ARG(flags) mode_t mode = 0; if ((flags) & (O_CREAT | __O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
EXPORT int open(const char *path, int flags, ...) { MODE_ARG(flags); return do_openat(AT_FDCWD, path, flags, mode, 0); }
EXPORT int open64(const char *path, int flags, ...) { MODE_ARG(flags); return do_openat(AT_FDCWD, path, flags, mode, 1); }
EXPORT int openat(int dfd, const char *path, int flags, ...) { MODE_ARG(flags); return do_openat(dfd, path, flags, mode, 0); }
EXPORT int openat64(int dfd, const char *path, int flags, ...) { MODE_ARG(flags); return do_openat(dfd, path, flags, mode, 1); }
EXPORT int __open_2(const char *path, int flags) { return do_openat(AT_FDCWD, path, flags, 0, 0); }
EXPORT int __open64_2(const char *path, int flags) { return do_openat(AT_FDCWD, path, flags, 0, 1); }
EXPORT int __openat_2(int dfd, const char *path, int flags) { return do_openat(dfd, path, flags, 0, 0); }

EXPORT int close(int fd)
{
	resolve();
	struct dbfile *f = lookup(fd);
	int r = real_close(fd);
	if (f && r == 0) forget(fd);
	return r;
}

EXPORT int dup(int fd)
{
	resolve();
	int r = real_dup(fd);
	if (r >= 0 && lookup(fd)) share(r, lookup(fd));
	return r;
}

EXPORT int dup2(int fd, int nfd)
{
	resolve();
	struct dbfile *f = lookup(fd);
	int r = real_dup2(fd, nfd);
	if (r >= 0 && fd != nfd) { if (f) share(r, f); else forget(r); }
	return r;
}

EXPORT int dup3(int fd, int nfd, int flags)
{
	resolve();
	struct dbfile *f = lookup(fd);
	int r = real_dup3(fd, nfd, flags);
	if (r >= 0) { if (f) share(r, f); else forget(r); }
	return r;
}

EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	va_start(ap, cmd);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	resolve();
	int r = real_fcntl(fd, cmd, arg);
	if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && lookup(fd)) share(r, lookup(fd));
	return r;
}
EXPORT int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));

/* ---------------------------------------------------------------- ioctl */
/* minsz of each argsz-led request (Linux copies at least this much from the user). Request numbers overlap between
 * the container, group and device files (e.g. VFIO_IOMMU_GET_INFO and VFIO_DEVICE_GET_PCI_HOT_RESET_INFO are both
 * _IO(';', 112)), so the file kind selects the table. */
static uint32_t argsz_min(int kind, unsigned long req)
{
	if (kind == K_CONTAINER) switch (req) {
	case VFIO_IOMMU_GET_INFO: return 16;
	case VFIO_IOMMU_MAP_DMA: return sizeof(struct vfio_iommu_type1_dma_map);
	case VFIO_IOMMU_UNMAP_DMA: return sizeof(struct vfio_iommu_type1_dma_unmap);
	case VFIO_IOMMU_DIRTY_PAGES: return sizeof(struct vfio_iommu_type1_dirty_bitmap);
	}
	if (kind == K_GROUP && req == VFIO_GROUP_GET_STATUS) return sizeof(struct vfio_group_status);
	if (kind == K_DEVICE) switch (req) {
	case VFIO_DEVICE_GET_INFO: return 16;
	case VFIO_DEVICE_GET_REGION_INFO: return 32;
	case VFIO_DEVICE_GET_IRQ_INFO: return sizeof(struct vfio_irq_info);
	case VFIO_DEVICE_SET_IRQS: return 20;
	case VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: return 12;
	case VFIO_DEVICE_PCI_HOT_RESET: return 12;
	case VFIO_DEVICE_IOEVENTFD: return sizeof(struct vfio_device_ioeventfd);
	case VFIO_DEVICE_FEATURE: return sizeof(struct vfio_device_feature);
	}
	return 0;
}

/* ---------------------------------------------------------------- DMA memory shared with the server
 * A device DMA into the program's memory is a process_vm_readv/writev on the server, one system call per access
 * (about 2 us each on a paravirtualized host: four per descriptor of the multi-queue device). When the program maps
 * for DMA a range that is one private anonymous mapping of at most DB_SHARE_MAX bytes, the library moves it onto a
 * sealed memfd at the same address with the same contents and protection, and passes the memfd with MAP_DMA; the
 * server maps it and the device's accesses become memory copies. The program sees the same bytes at the same address.
 * What differs, and how it is kept: a fork would share the range with the child, so the child gets a private copy
 * (after_fork_child), as a fork copies pinned anonymous pages; a munmap of the range tells the server (DB_MUNMAP), so
 * a later MAP_DMA at that address describes the new memory. Writes another thread makes to the range while MAP_DMA
 * moves it can be lost (as can be the range's madvise state): programs map DMA buffers before using them. Larger or
 * other ranges (file or shared mappings, the heap, the stack), or DOORBELL_DMA_SHARE=0, keep process_vm_readv/writev. */
#define DB_SHARE_MAX (64ull << 20)
#define MAX_SHARED 64
struct shared_range { uintptr_t start, end; int prot; };
static struct shared_range g_shared[MAX_SHARED];
static int g_nshared;

/* the whole of [s, e) is one private anonymous VMA with read (and maybe write) access: its protection, or -1 */
static int private_anon_prot(uintptr_t s, uintptr_t e)
{
	int fd = real_open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0) return -1;
	static __thread char buf[1 << 16];
	char line[512];
	size_t ll = 0;
	int prot = -1, done = 0;
	ssize_t n;
	while (!done && (n = real_read(fd, buf, sizeof buf)) > 0)
		for (ssize_t i = 0; i < n && !done; i++) {
			if (buf[i] != '\n') { if (ll < sizeof line - 1) line[ll++] = buf[i]; continue; }
			line[ll] = 0;
			ll = 0;
			unsigned long vs, ve, off, inode;
			char perms[8], dev[16];
			int name = 0;
			if (sscanf(line, "%lx-%lx %7s %lx %15s %lu %n", &vs, &ve, perms, &off, dev, &inode, &name) < 6) continue;
			if (vs > s || ve <= s) continue;
			done = 1;
			/* one VMA covers the range; anonymous (no inode, no name: not [heap], [stack], a file or shmem), private */
			if (ve < e || inode != 0 || (name > 0 && line[name] != 0) || perms[3] != 'p' || perms[0] != 'r') break;
			prot = PROT_READ | (perms[1] == 'w' ? PROT_WRITE : 0);
		}
	real_close(fd);
	return prot;
}

static int page_is_zero(const uint8_t *p)
{
	const uint64_t *q = (const uint64_t *)p;
	for (int i = 0; i < 512; i++) if (q[i]) return 0;
	return 1;
}

/* moves [vaddr, vaddr+size) onto a sealed memfd (see above): the memfd, or -1 to leave the range as it is */
static int share_dma_range(uint64_t vaddr, uint64_t size)
{
	static int enabled = -1;
	if (enabled < 0) { const char *e = getenv("DOORBELL_DMA_SHARE"); enabled = !(e && e[0] == '0'); }
	uintptr_t s = (uintptr_t)vaddr, e = s + size;
	if (!enabled || size == 0 || size > DB_SHARE_MAX || ((s | size) & 4095) || e < s) return -1;
	pthread_mutex_lock(&g_tlock);
	int known = 0;
	for (int i = 0; i < g_nshared; i++) if (g_shared[i].start < e && s < g_shared[i].end) known = 1;
	pthread_mutex_unlock(&g_tlock);
	if (known || g_nshared == MAX_SHARED) return -1; /* already moved (the server has it), or overlapping one */
	int prot = private_anon_prot(s, e);
	if (prot < 0) return -1;
	int fd = (int)syscall(SYS_memfd_create, "doorbell-dma", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0) return -1;
	uint8_t *tmp = MAP_FAILED;
	if (ftruncate(fd, (off_t)size) != 0 || fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL) != 0 ||
	    (tmp = real_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
		real_close(fd);
		return -1;
	}
	for (uintptr_t o = 0; o < size; o += 4096) /* untouched pages stay holes in the memfd (no memory for zeros) */
		if (!page_is_zero((const uint8_t *)s + o)) memcpy(tmp + o, (const uint8_t *)s + o, 4096);
	real_munmap(tmp, size);
	if (real_mmap((void *)s, size, prot, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
		real_close(fd); /* the range is untouched: MAP_FIXED failed before replacing it */
		return -1;
	}
	pthread_mutex_lock(&g_tlock);
	g_shared[g_nshared++] = (struct shared_range){ s, e, prot };
	pthread_mutex_unlock(&g_tlock);
	return fd;
}

/* munmap of (part of) a moved range: drop it here and from the client's memory the server describes */
static void unshare_range(uintptr_t s, uintptr_t e)
{
	pthread_mutex_lock(&g_tlock);
	for (int i = 0; i < g_nshared; i++) {
		struct shared_range *m = &g_shared[i];
		if (m->end <= s || m->start >= e) continue;
		uintptr_t is = s > m->start ? s : m->start, ie = e < m->end ? e : m->end;
		rpc(DB_MUNMAP, -1, is, ie - is, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL);
		if (is == m->start && ie == m->end) { g_shared[i--] = g_shared[--g_nshared]; continue; }
		if (is == m->start) m->start = ie;
		else if (ie == m->end) m->end = is;
		else if (g_nshared < MAX_SHARED) { g_shared[g_nshared++] = (struct shared_range){ ie, m->end, m->prot }; m->end = is; }
	}
	pthread_mutex_unlock(&g_tlock);
}

/* a forked child: each moved range becomes a private copy again (the child must not share the parent's DMA memory) */
static void privatize_shared(void)
{
	for (int i = 0; i < g_nshared; i++) {
		size_t len = g_shared[i].end - g_shared[i].start;
		void *tmp = real_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (tmp == MAP_FAILED) die("libdoorbell-vfio: fork: no memory for a private copy of DMA memory\n");
		else {
			memcpy(tmp, (void *)g_shared[i].start, len);
			mprotect(tmp, len, g_shared[i].prot);
			if (mremap(tmp, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)g_shared[i].start) == MAP_FAILED)
				die("libdoorbell-vfio: fork: cannot make DMA memory private in the child: %s\n", strerror(errno));
		}
	}
	g_nshared = 0;
}

/* Stores through a BAR mapping are posted (the server sends no completion, as PCIe has none for posted writes) while the
 * mapping is known to decode. After anything that may turn memory decode off or reset the device (a region write, e.g.
 * to COMMAND; a device ioctl, e.g. RESET) the next store goes synchronously, so a disabled BAR still gives SIGBUS as
 * vfio-pci's fault handler does; a store that succeeds makes stores posted again. */
static volatile int g_sync_stores = 1;

static int64_t scalar_ioctl(struct dbfile *f, unsigned long req, uint64_t v)
{
	g_sync_stores = 1;
	return rpc(DB_IOCTL, f->sfd, req, 1, v, 0, NULL, 0, NULL, 0, NULL, 0, NULL);
}

static int64_t pointer_ioctl(struct dbfile *f, unsigned long req, void *arg, uint32_t minsz)
{
	static __thread uint8_t buf[MAX_ARG], rep[MAX_ARG];
	g_sync_stores = 1;
	uint32_t argsz = 0;
	if (self_read(&argsz, arg, 4) != 4) return -EFAULT;
	uint32_t want = argsz < minsz ? minsz : argsz > MAX_ARG ? MAX_ARG : argsz;
	ssize_t n = self_read(buf, arg, want);
	if (n < (ssize_t)minsz) {
		/* partial: read page by page up to what is readable */
		n = 0;
		while ((uint32_t)n < want) {
			size_t chunk = 4096 - (((uintptr_t)arg + n) & 4095);
			if (chunk > (size_t)(want - n)) chunk = want - n;
			if (self_read(buf + n, (uint8_t *)arg + n, chunk) != (ssize_t)chunk) break;
			n += chunk;
		}
		if (n < (ssize_t)minsz) return -EFAULT;
	}
	int fds[DB_MAX_FDS], nfds = 0;
	if (f->kind == K_DEVICE && req == VFIO_DEVICE_SET_IRQS) {
		struct vfio_irq_set *s = (struct vfio_irq_set *)buf;
		if (s->flags & VFIO_IRQ_SET_DATA_EVENTFD)
			for (uint32_t i = 0; i < s->count && 20 + 4 * (uint64_t)i + 4 <= (uint64_t)n; i++) {
				int32_t v;
				memcpy(&v, buf + 20 + 4 * i, 4);
				if (v >= 0) { if (nfds == DB_MAX_FDS) return -EINVAL; fds[nfds++] = v; }
			}
	} else if (f->kind == K_DEVICE && req == VFIO_DEVICE_IOEVENTFD) {
		int32_t v;
		memcpy(&v, buf + 24, 4);
		if (v >= 0) fds[nfds++] = v;
	} else if (f->kind == K_CONTAINER && req == VFIO_IOMMU_MAP_DMA) {
		struct vfio_iommu_type1_dma_map *m = (struct vfio_iommu_type1_dma_map *)buf;
		int mfd = (m->flags & VFIO_DMA_MAP_FLAG_VADDR) || !(m->flags & (VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE))
				  ? -1 : share_dma_range(m->vaddr, m->size);
		if (mfd >= 0) {
			fds[nfds++] = mfd;
			uint32_t rl = 0;
			int64_t r = rpc(DB_IOCTL, f->sfd, req, 0, 0, 0, buf, (uint32_t)n, fds, nfds, rep, (uint32_t)n, &rl);
			real_close(mfd); /* the mapping here and the server's keep the memory */
			return r;
		}
	} else if (f->kind == K_DEVICE && req == VFIO_DEVICE_PCI_HOT_RESET) {
		struct vfio_pci_hot_reset *h = (struct vfio_pci_hot_reset *)buf;
		for (uint32_t i = 0; i < h->count && 12 + 4 * (uint64_t)i + 4 <= (uint64_t)n; i++) {
			int32_t v;
			memcpy(&v, buf + 12 + 4 * i, 4);
			struct dbfile *g = lookup(v);
			v = g ? g->sfd : INT32_MIN;
			memcpy(buf + 12 + 4 * i, &v, 4);
		}
	}
	uint32_t rlen = 0;
	int64_t r = rpc(DB_IOCTL, f->sfd, req, 0, 0, 0, buf, (uint32_t)n, fds, nfds, rep, (uint32_t)n, &rlen);
	if (r == -EIO && rlen == 0) return r;
	if (f->kind == K_DEVICE && req == VFIO_DEVICE_PCI_HOT_RESET) return r;
	/* copy back only the bytes the call changed (copy_to_user of what the kernel wrote) */
	for (uint32_t i = 0; i < rlen;) {
		if (rep[i] == buf[i]) { i++; continue; }
		uint32_t j = i;
		while (j < rlen && rep[j] != buf[j]) j++;
		if (self_write((uint8_t *)arg + i, rep + i, j - i) != (ssize_t)(j - i)) return -EFAULT;
		i = j;
	}
	return r;
}

EXPORT int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);
	resolve();
	struct dbfile *f = lookup(fd);
	if (!f) return real_ioctl(fd, req, arg);
	int64_t r;
	uint32_t minsz;
	switch (req) {
	case VFIO_GET_API_VERSION: case VFIO_CHECK_EXTENSION: case VFIO_SET_IOMMU: case VFIO_GROUP_UNSET_CONTAINER:
	case VFIO_DEVICE_RESET:
		r = scalar_ioctl(f, req, (uint64_t)(uintptr_t)arg);
		break;
	case VFIO_GROUP_SET_CONTAINER: {
		int32_t cfd;
		if (self_read(&cfd, arg, 4) != 4) { r = -EFAULT; break; }
		struct dbfile *c = lookup(cfd);
		int32_t s = c ? c->sfd : INT32_MIN;
		r = rpc(DB_IOCTL, f->sfd, req, 0, 0, 0, &s, 4, NULL, 0, NULL, 0, NULL);
		break;
	}
	case VFIO_GROUP_GET_DEVICE_FD: {
		char name[256];
		ssize_t n = 0;
		while (n < (ssize_t)sizeof name && self_read(name + n, (char *)arg + n, 1) == 1 && name[n]) n++;
		if (n == (ssize_t)sizeof name || self_read(name + n, (char *)arg + n, 1) != 1) { r = -EFAULT; break; }
		r = rpc(DB_IOCTL, f->sfd, req, 0, 0, 0, name, (uint32_t)n + 1, NULL, 0, NULL, 0, NULL);
		if (r >= 0) {
			int nfd = install((int)r, K_DEVICE, 1); /* device fds are O_CLOEXEC in Linux */
			return nfd;
		}
		break;
	}
	default:
		minsz = argsz_min(f->kind, req);
		if (minsz) r = pointer_ioctl(f, req, arg, minsz);
		else r = scalar_ioctl(f, req, (uint64_t)(uintptr_t)arg); /* unknown: the server answers ENOTTY */
	}
	if (r < 0) { errno = (int)-r; return -1; }
	return (int)r;
}

/* ---------------------------------------------------------------- read/write of regions */
static ssize_t region_pread(struct dbfile *f, void *buf, size_t count, uint64_t off)
{
	static __thread uint8_t tmp[64 << 10];
	size_t done = 0;
	while (done < count) {
		uint32_t chunk = count - done > sizeof tmp ? sizeof tmp : (uint32_t)(count - done), rlen = 0;
		int64_t r = rpc(DB_PREAD, f->sfd, off + done, chunk, 0, 0, NULL, 0, NULL, 0, tmp, chunk, &rlen);
		if (r < 0) { if (done) break; errno = (int)-r; return -1; }
		if (r == 0) break;
		if (self_write((uint8_t *)buf + done, tmp, (size_t)r) != r) { if (done) break; errno = EFAULT; return -1; }
		done += (size_t)r;
		if ((uint32_t)r < chunk) break;
	}
	return (ssize_t)done;
}

static ssize_t region_pwrite(struct dbfile *f, const void *buf, size_t count, uint64_t off)
{
	static __thread uint8_t tmp[64 << 10];
	size_t done = 0;
	g_sync_stores = 1;
	while (done < count) {
		uint32_t chunk = count - done > sizeof tmp ? sizeof tmp : (uint32_t)(count - done);
		if (self_read(tmp, (const uint8_t *)buf + done, chunk) != chunk) { if (done) break; errno = EFAULT; return -1; }
		int64_t r = rpc(DB_PWRITE, f->sfd, off + done, 0, 0, 0, tmp, chunk, NULL, 0, NULL, 0, NULL);
		if (r < 0) { if (done) break; errno = (int)-r; return -1; }
		if (r == 0) break;
		done += (size_t)r;
		if ((uint32_t)r < chunk) break;
	}
	return (ssize_t)done;
}

static ssize_t not_device(void) { errno = EINVAL; return -1; }

EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
	resolve();
	struct dbfile *f = lookup(fd);
	if (!f) return real_pread(fd, buf, n, off);
	return f->kind == K_DEVICE ? region_pread(f, buf, n, (uint64_t)off) : not_device();
}
EXPORT ssize_t pread64(int fd, void *buf, size_t n, off64_t off)
{
	resolve();
	struct dbfile *f = lookup(fd);
	if (!f) return real_pread64(fd, buf, n, off);
	return f->kind == K_DEVICE ? region_pread(f, buf, n, (uint64_t)off) : not_device();
}
EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	resolve();
	struct dbfile *f = lookup(fd);
	if (!f) return real_pwrite(fd, buf, n, off);
	return f->kind == K_DEVICE ? region_pwrite(f, buf, n, (uint64_t)off) : not_device();
}
EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	resolve();
	struct dbfile *f = lookup(fd);
	if (!f) return real_pwrite64(fd, buf, n, off);
	return f->kind == K_DEVICE ? region_pwrite(f, buf, n, (uint64_t)off) : not_device();
}
/* _FORTIFY_SOURCE builds (Debian's QEMU) call the checking variants when the buffer size is known */
EXPORT ssize_t __pread_chk(int fd, void *buf, size_t n, off_t off, size_t buflen)
{
	if (n > buflen) abort(); /* what glibc's __chk_fail does: a buffer overflow */
	return pread(fd, buf, n, off);
}
EXPORT ssize_t __pread64_chk(int fd, void *buf, size_t n, off64_t off, size_t buflen)
{
	if (n > buflen) abort();
	return pread64(fd, buf, n, off);
}
EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	if (n > buflen) abort();
	return read(fd, buf, n);
}

/* read/write on a device fd use the file position, as vfio_device_fops do */
EXPORT ssize_t read(int fd, void *buf, size_t n)
{
	resolve();
	struct dbfile *f = lookup(fd);
	if (!f) return real_read(fd, buf, n);
	if (f->kind != K_DEVICE) return not_device();
	ssize_t r = region_pread(f, buf, n, f->pos);
	if (r > 0) f->pos += (uint64_t)r;
	return r;
}
EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	resolve();
	struct dbfile *f = lookup(fd);
	if (!f) return real_write(fd, buf, n);
	if (f->kind != K_DEVICE) return not_device();
	ssize_t r = region_pwrite(f, buf, n, f->pos);
	if (r > 0) f->pos += (uint64_t)r;
	return r;
}
EXPORT off_t lseek(int fd, off_t off, int whence)
{
	resolve();
	struct dbfile *f = lookup(fd);
	if (!f) return real_lseek(fd, off, whence);
	if (f->kind != K_DEVICE) { errno = ESPIPE; return -1; }
	if (whence == SEEK_SET && off >= 0) f->pos = (uint64_t)off;
	else if (whence == SEEK_CUR && (int64_t)f->pos + off >= 0) f->pos += (uint64_t)off;
	else { errno = EINVAL; return -1; }
	return (off_t)f->pos;
}
EXPORT off64_t lseek64(int fd, off64_t off, int whence) __attribute__((alias("lseek")));

/* ---------------------------------------------------------------- BAR mmap and the fault decoder */
static struct barmap *find_map(uintptr_t a)
{
	for (int i = 0; i < g_nmaps; i++)
		if (a >= g_maps[i].start && a < g_maps[i].end) return &g_maps[i];
	return NULL;
}

static const int greg_of[16] = { REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP, REG_RSI, REG_RDI,
				 REG_R8, REG_R9, REG_R10, REG_R11, REG_R12, REG_R13, REG_R14, REG_R15 };

static uint64_t get_reg(ucontext_t *uc, int reg, int size, int rex)
{
	if (size == 1 && !rex && reg >= 4 && reg < 8) return (uc->uc_mcontext.gregs[greg_of[reg - 4]] >> 8) & 0xff; /* ah..bh */
	uint64_t v = (uint64_t)uc->uc_mcontext.gregs[greg_of[reg]];
	return size == 8 ? v : v & ((1ull << (8 * size)) - 1);
}

static void set_reg(ucontext_t *uc, int reg, int size, int rex, uint64_t v)
{
	if (size == 1 && !rex && reg >= 4 && reg < 8) {
		greg_t *g = &uc->uc_mcontext.gregs[greg_of[reg - 4]];
		*g = (greg_t)(((uint64_t)*g & ~0xff00ull) | ((v & 0xff) << 8));
		return;
	}
	greg_t *g = &uc->uc_mcontext.gregs[greg_of[reg]];
	switch (size) {
	case 8: *g = (greg_t)v; break;
	case 4: *g = (greg_t)(v & 0xffffffffull); break; /* a 32-bit destination zero-extends */
	case 2: *g = (greg_t)(((uint64_t)*g & ~0xffffull) | (v & 0xffff)); break;
	default: *g = (greg_t)(((uint64_t)*g & ~0xffull) | (v & 0xff)); break;
	}
}

static void chain_segv(int sig, siginfo_t *si, void *uc)
{
	if (g_old_segv.sa_flags & SA_SIGINFO) { if (g_old_segv.sa_sigaction) { g_old_segv.sa_sigaction(sig, si, uc); return; } }
	else if (g_old_segv.sa_handler != SIG_DFL && g_old_segv.sa_handler != SIG_IGN) { g_old_segv.sa_handler(sig); return; }
	/* default action: let the fault happen again without us */
	struct sigaction d = { .sa_handler = SIG_DFL };
	real_sigaction(SIGSEGV, &d, NULL);
}

static int trace_on(void)
{
	static int state; /* 0 unknown, 1 on, -1 off */
	if (!state) state = getenv("DOORBELL_TRACE") ? 1 : -1;
	return state == 1;
}

static void trace_mmio(const char *what, uintptr_t a, int size, uint64_t v)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	die("%d@%lld.%06ld:doorbell_vfio_mmio_%s addr %p size %d value 0x%llx\n", (int)getpid(), (long long)ts.tv_sec,
	    ts.tv_nsec / 1000, what, (void *)a, size, (unsigned long long)v);
}

static void segv_handler(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;
	int saved = errno;
	uintptr_t a = (uintptr_t)si->si_addr;
	struct barmap *m = find_map(a);
	if (!m) { chain_segv(sig, si, ucv); errno = saved; return; }
	const uint8_t *rip = (const uint8_t *)uc->uc_mcontext.gregs[REG_RIP];
	struct db_insn in;
	if (!db_decode(rip, &in) || a + (uintptr_t)in.size > m->end) {
		uint8_t b[15] = { 0 };
		self_read(b, rip, sizeof b);
		die("libdoorbell-vfio: cannot emulate the instruction at %p accessing BAR mapping address %p: bytes "
		    "%02x %02x %02x %02x %02x %02x %02x %02x %02x %02x %02x %02x %02x %02x %02x (only 1/2/4/8-byte mov/movzx/movsx "
		    "forms are decoded); stopping\n", (void *)rip, (void *)a, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
		    b[8], b[9], b[10], b[11], b[12], b[13], b[14]);
		_exit(134);
	}
	int64_t r;
	if (in.store) {
		uint64_t v = in.has_imm ? in.imm : get_reg(uc, in.reg, in.size, in.rex);
		if (trace_on()) trace_mmio("write", a, in.size, v);
		int sync = g_sync_stores;
		r = rpc(sync ? DB_MMIO_WRITE : DB_MMIO_WRITE_POSTED, -1, a, (uint64_t)in.size, v, 0, NULL, 0, NULL, 0, NULL, 0, NULL);
		if (sync && r == 0) g_sync_stores = 0;
	} else {
		uint64_t v = 0;
		uint32_t rlen = 0;
		r = rpc(DB_MMIO_READ, -1, a, (uint64_t)in.size, 0, 0, NULL, 0, NULL, 0, &v, 8, &rlen);
		if (r == 0 && trace_on()) trace_mmio("read", a, in.size, v);
		if (r == 0) {
			int bits = 8 * in.size;
			if (in.ext == DB_EXT_SIGN && bits < 64) v = (uint64_t)(((int64_t)(v << (64 - bits))) >> (64 - bits));
			set_reg(uc, in.reg, in.dst_size, in.rex, v);
		}
	}
	if (r == -EIO) { /* memory decode off / device in D3: SIGBUS, as vfio-pci's fault handler gives */
		struct sigaction cur;
		real_sigaction(SIGBUS, NULL, &cur);
		int handled = (cur.sa_flags & SA_SIGINFO) ? cur.sa_sigaction != NULL
							   : cur.sa_handler != SIG_DFL && cur.sa_handler != SIG_IGN;
		if (!handled) {
			die("libdoorbell-vfio: BAR access at %p: the device does not decode it (SIGBUS)\n", (void *)a);
			signal(SIGBUS, SIG_DFL);
			raise(SIGBUS);
			_exit(135);
		}
		/* the program handles SIGBUS: deliver it as the kernel would (BUS_ADRERR at the access); returning retries */
		siginfo_t bi = *si;
		bi.si_signo = SIGBUS;
		bi.si_code = BUS_ADRERR;
		bi.si_addr = (void *)a;
		errno = saved;
		if (cur.sa_flags & SA_SIGINFO) cur.sa_sigaction(SIGBUS, &bi, ucv);
		else cur.sa_handler(SIGBUS);
		return;
	}
	if (r < 0) { chain_segv(sig, si, ucv); errno = saved; return; }
	uc->uc_mcontext.gregs[REG_RIP] += in.len;
	errno = saved;
}

static void install_segv(void)
{
	if (g_segv_installed) return;
	struct sigaction sa = { 0 };
	sa.sa_sigaction = segv_handler;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	real_sigaction(SIGSEGV, &sa, &g_old_segv);
	g_segv_installed = 1;
}

/* A program that installs its own SIGSEGV handler keeps ours first; its handler gets the faults that are not ours. */
EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
	resolve();
	if (sig != SIGSEGV || !g_segv_installed) return real_sigaction(sig, act, old);
	if (old) *old = g_old_segv;
	if (act) g_old_segv = *act;
	return 0;
}

static void *bar_mmap(struct dbfile *f, void *addr, size_t len, int prot, int flags, uint64_t off)
{
	if (f->kind != K_DEVICE) { errno = ENODEV; return MAP_FAILED; }
	if (len == 0) { errno = EINVAL; return MAP_FAILED; }
	void *p = real_mmap(addr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)), -1, 0);
	if (p == MAP_FAILED) return p;
	int64_t r = rpc(DB_MMAP, f->sfd, off, len, (uint64_t)(uintptr_t)p,
			(uint64_t)((prot & (PROT_READ | PROT_WRITE)) | ((flags & MAP_SHARED) ? 0x100 : 0)), NULL, 0, NULL, 0, NULL, 0, NULL);
	if (r < 0) { real_munmap(p, len); errno = (int)-r; return MAP_FAILED; }
	pthread_mutex_lock(&g_tlock);
	if (g_nmaps == MAX_MAPS) {
		pthread_mutex_unlock(&g_tlock);
		real_munmap(p, len);
		rpc(DB_MUNMAP, -1, (uint64_t)(uintptr_t)p, len, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL);
		errno = ENOMEM;
		return MAP_FAILED;
	}
	size_t plen = (len + 4095) & ~(size_t)4095;
	g_maps[g_nmaps++] = (struct barmap){ (uintptr_t)p, (uintptr_t)p + plen, prot };
	install_segv();
	pthread_mutex_unlock(&g_tlock);
	return p;
}

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	resolve();
	struct dbfile *f = (flags & MAP_ANONYMOUS) ? NULL : lookup(fd);
	if (!f) return real_mmap(addr, len, prot, flags, fd, off);
	return bar_mmap(f, addr, len, prot, flags, (uint64_t)off);
}
EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off) __attribute__((alias("mmap")));

EXPORT int munmap(void *addr, size_t len)
{
	resolve();
	int r = real_munmap(addr, len);
	if (r == 0 && g_nshared) unshare_range((uintptr_t)addr, (uintptr_t)addr + ((len + 4095) & ~(size_t)4095));
	if (r != 0 || g_nmaps == 0) return r;
	uintptr_t s = (uintptr_t)addr, e = s + ((len + 4095) & ~(size_t)4095);
	pthread_mutex_lock(&g_tlock);
	for (int i = 0; i < g_nmaps; i++) {
		struct barmap *m = &g_maps[i];
		if (m->end <= s || m->start >= e) continue;
		uintptr_t is = s > m->start ? s : m->start, ie = e < m->end ? e : m->end;
		rpc(DB_MUNMAP, -1, is, ie - is, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL);
		if (is == m->start && ie == m->end) { g_maps[i--] = g_maps[--g_nmaps]; continue; }
		if (is == m->start) m->start = ie;
		else if (ie == m->end) m->end = is;
		else if (g_nmaps < MAX_MAPS) { g_maps[g_nmaps++] = (struct barmap){ ie, m->end, m->prot }; m->end = is; }
	}
	pthread_mutex_unlock(&g_tlock);
	return r;
}

/* ---------------------------------------------------------------- fork */
static void after_fork_child(void)
{
	/* The child shares no connection with the server: its copies of VFIO descriptors refer to nothing. */
	if (g_sock >= 0) { real_close(g_sock); g_sock = -1; }
	g_pid = getpid();
	privatize_shared();
	for (int i = 0; i < MAX_FD; i++) g_files[i] = NULL;
	g_nmaps = 0;
	pthread_mutex_init(&g_lock, NULL);
	pthread_mutex_init(&g_tlock, NULL);
}

__attribute__((constructor)) static void init(void)
{
	resolve();
	g_pid = getpid();
	pthread_atfork(NULL, NULL, after_fork_child);
}

/* Benchmarks only (examples/c/vfio-driver.c --bench finds it with dlsym): start = 1 asks the server to stamp one MSI's
   hops with CLOCK_MONOTONIC (ServeOp.Stamps); start = 0 stops and copies up to max (kind, nanoseconds) pairs into out,
   4096 per reply. Returns 0 / the number of pairs, or -errno. */
EXPORT long doorbell_vfio_stamps(int start, uint64_t *out, long max)
{
	if (start) return (long)rpc(DB_STAMPS, -1, 1, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL);
	if (max < 0) return -EINVAL;
	int64_t total = rpc(DB_STAMPS, -1, 0, 0, 0, 0, NULL, 0, NULL, 0, NULL, 0, NULL);
	if (total < 0) return (long)total;
	long got = 0;
	while (got < total && got < max) {
		long want = max - got < 4096 ? max - got : 4096;
		uint32_t rlen = 0;
		int64_t r = rpc(DB_STAMPS, -1, 2, (uint64_t)got, 0, 0, NULL, 0, NULL, 0, out + 2 * got, (uint32_t)(want * 16), &rlen);
		if (r < 0) return (long)r;
		if (r == 0 || rlen < 16) break;
		got += rlen / 16 < (uint32_t)want ? rlen / 16 : want;
	}
	return got;
}
