/*
 * escape_probe: make one attempt to get out of a container, and say whether it worked.
 *
 * Built static by tests/test_escape.py (gcc -static -O2 -o probe escape_probe.c) and bound
 * read-only into the container, so it needs nothing from the container's root filesystem.
 *
 *   probe SUBCOMMAND [ARG...]
 *
 * Output is one line on stdout, and the exit status says the same:
 *
 *   refused ERRNO [DETAIL]   exit 0   the kernel refused the attempt; ERRNO is the error's
 *                                     name (EPERM, EROFS, ...), or "empty" when a read or a
 *                                     listing got nothing (a masked path)
 *   ok [DETAIL]              exit 1   the attempt worked: a way out (or a look in)
 *   error: MESSAGE           exit 2   bad usage, or the probe could not set its attempt up
 *
 * `status` is not an attempt: it prints the capability, no_new_privs and seccomp lines of
 * /proc/self/status and exits 0.
 *
 * Subcommands:
 *   status                      CapInh/CapPrm/CapEff/CapBnd/CapAmb, NoNewPrivs, Seccomp
 *   read PATH                   open PATH read-only and read from it (ok: bytes came back)
 *   open PATH                   open PATH read-only (ok: it opened; /proc/PID/mem, environ
 *                               and maps check their access on open)
 *   list DIR                    list DIR (ok: it has entries besides . and ..)
 *   readlink PATH               read the link PATH (ok: it gave a target)
 *   readlinks DIR               read every link in DIR (ok: one of them gave a target)
 *   write PATH TEXT             open PATH write-only (no create, no truncate), write TEXT
 *   mknod-open MAJ MIN          make a block device node MAJ:MIN and read from it
 *   mknod-mount MAJ MIN FSTYPE [MARKER]
 *                               make a block device node and mount it (read-write); when the
 *                               mount works, create MARKER (relative to the mounted
 *                               filesystem's root) with O_EXCL, so the host can see it
 *   mount-proc                  mount a new proc on a fresh directory under /tmp
 *   mount-tmpfs                 mount a tmpfs on a fresh directory under /tmp
 *   mount-cgroup                mount a cgroup2 hierarchy, then the v1 "devices" hierarchy
 *   remount-rw PATH             remount the mount at PATH read-write (MS_REMOUNT|MS_BIND;
 *                               then, if that worked, its filesystem too: MS_REMOUNT)
 *   init-module                 init_module, finit_module and delete_module (harmless
 *                               arguments: ok means one of them got past the permission
 *                               check, whatever error the kernel gave after it)
 *   unshare user|mount|cgroup|pid|net|ipc|uts
 *                               a new namespace of that kind, by unshare(2), clone(2) and
 *                               clone3(2) (ok: one of them made it)
 *   tiocsti FD TEXT             push TEXT into the input of the terminal on FD (TIOCSTI)
 *   keyctl                      keyctl(KEYCTL_GET_KEYRING_ID), add_key, request_key (ok: one
 *                               of them reached the key management code)
 *   pidfd-getfd PID MAXFD       pidfd_open(PID), then pidfd_getfd of each of PID's
 *                               descriptors 0..MAXFD; a socket obtained this way gets a
 *                               forged message written to it (ok: a descriptor was taken)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#ifndef SYS_clone3
#define SYS_clone3 435
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef CLONE_NEWCGROUP
#define CLONE_NEWCGROUP 0x02000000
#endif
#define KEYCTL_GET_KEYRING_ID 0
#define KEY_SPEC_PROCESS_KEYRING (-2)
#define KEY_SPEC_USER_KEYRING (-4)

enum { REFUSED = 0, ALLOWED = 1, FAILED = 2 };

static const char *errname(int number)
{
    static char buffer[32];
    const char *name = strerrorname_np(number);
    if (name)
        return name;
    snprintf(buffer, sizeof buffer, "errno%d", number);
    return buffer;
}

static int refused(int number, const char *detail)
{
    printf("refused %s%s%s\n", errname(number), detail ? " " : "", detail ? detail : "");
    return REFUSED;
}

static int allowed(const char *detail)
{
    printf("ok%s%s\n", detail ? " " : "", detail ? detail : "");
    return ALLOWED;
}

static int failed(const char *message)
{
    printf("error: %s\n", message);
    return FAILED;
}

static int failed_errno(const char *what)
{
    printf("error: %s: %s\n", what, errname(errno));
    return FAILED;
}

/* Appends " NAME=RESULT" to a detail line. */
static void note(char *detail, size_t size, const char *name, int number)
{
    size_t used = strlen(detail);
    snprintf(detail + used, size - used, "%s%s=%s", used ? " " : "", name,
             number ? errname(number) : "ok");
}

static int cmd_status(void)
{
    static const char *const keys[] = {"CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:",
                                       "NoNewPrivs:", "Seccomp:", NULL};
    char line[512];
    FILE *file = fopen("/proc/self/status", "r");
    if (!file)
        return failed_errno("/proc/self/status");
    while (fgets(line, sizeof line, file))
        for (int i = 0; keys[i]; i++)
            if (strncmp(line, keys[i], strlen(keys[i])) == 0)
                fputs(line, stdout);
    fclose(file);
    return REFUSED;
}

static int cmd_read(const char *path)
{
    char buffer[4096], detail[64];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return refused(errno, "open");
    ssize_t got = read(fd, buffer, sizeof buffer);
    int saved = errno;
    close(fd);
    if (got < 0)
        return refused(saved, "read");
    if (got == 0) {
        printf("refused empty\n");
        return REFUSED;
    }
    snprintf(detail, sizeof detail, "read %zd bytes", got);
    return allowed(detail);
}

static int cmd_open(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return refused(errno, "open");
    close(fd);
    return allowed("opened");
}

static int cmd_list(const char *path)
{
    char detail[64];
    DIR *dir = opendir(path);
    if (!dir)
        return refused(errno, "opendir");
    int entries = 0;
    struct dirent *entry;
    errno = 0;
    while ((entry = readdir(dir)))
        if (strcmp(entry->d_name, ".") && strcmp(entry->d_name, ".."))
            entries++;
    int saved = errno;
    closedir(dir);
    if (saved && !entries)
        return refused(saved, "readdir");
    if (!entries) {
        printf("refused empty\n");
        return REFUSED;
    }
    snprintf(detail, sizeof detail, "%d entries", entries);
    return allowed(detail);
}

static int cmd_readlink(const char *path)
{
    char target[4096], detail[4200];
    ssize_t length = readlink(path, target, sizeof target - 1);
    if (length < 0)
        return refused(errno, "readlink");
    target[length] = '\0';
    snprintf(detail, sizeof detail, "-> %s", target);
    return allowed(detail);
}

static int cmd_readlinks(const char *path)
{
    char link[4096], target[4096], detail[4200];
    DIR *dir = opendir(path);
    if (!dir)
        return refused(errno, "opendir");
    int first_error = 0, links = 0;
    struct dirent *entry;
    int listing = 0;
    for (;;) {
        errno = 0;
        if (!(entry = readdir(dir))) {
            listing = errno;
            break;
        }
        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, ".."))
            continue;
        links++;
        snprintf(link, sizeof link, "%s/%s", path, entry->d_name);
        ssize_t length = readlink(link, target, sizeof target - 1);
        if (length < 0) {
            if (!first_error)
                first_error = errno;
            continue;
        }
        target[length] = '\0';
        closedir(dir);
        snprintf(detail, sizeof detail, "%.255s -> %.3800s", entry->d_name, target);
        return allowed(detail);
    }
    closedir(dir);
    if (listing && !links)
        return refused(listing, "readdir");
    if (!links) {
        printf("refused empty\n");
        return REFUSED;
    }
    snprintf(detail, sizeof detail, "readlink of all %d entries", links);
    return refused(first_error, detail);
}

static int cmd_write(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return refused(errno, "open");
    ssize_t put = write(fd, text, strlen(text));
    int saved = errno;
    close(fd);
    if (put < 0)
        return refused(saved, "write");
    return allowed("written");
}

/* A directory where a device node can be made and used: writable, and not mounted nodev
 * (a nodev mount would refuse the open by itself and hide what the devices cgroup does). */
static const char *node_directory(void)
{
    static const char *const candidates[] = {"/dev", "/", NULL};
    for (int i = 0; candidates[i]; i++) {
        struct statvfs info;
        if (statvfs(candidates[i], &info) == 0 && !(info.f_flag & (ST_NODEV | ST_RDONLY)))
            return candidates[i];
    }
    return NULL;
}

/* Makes the block device node at NODE: 0, mknod's errno, or -1 when there is nowhere to. */
static int make_node(const char *majors, const char *minors, char *node, size_t size)
{
    const char *directory = node_directory();
    if (!directory)
        return -1;
    snprintf(node, size, "%s/.escape-probe-%d", strcmp(directory, "/") ? directory : "",
             (int)getpid());
    dev_t device = makedev(strtoul(majors, NULL, 10), strtoul(minors, NULL, 10));
    if (mknod(node, S_IFBLK | 0600, device) < 0)
        return errno;
    return 0;
}

static int cmd_mknod_open(const char *majors, const char *minors)
{
    char node[256], buffer[512], detail[64];
    int status = make_node(majors, minors, node, sizeof node);
    if (status < 0)
        return failed("no writable directory without nodev for the node");
    if (status > 0)
        return refused(status, "mknod");
    int fd = open(node, O_RDONLY | O_CLOEXEC);
    int saved = errno;
    unlink(node);
    if (fd < 0)
        return refused(saved, "open");
    ssize_t got = read(fd, buffer, sizeof buffer);
    saved = errno;
    close(fd);
    if (got < 0)
        return refused(saved, "read");
    snprintf(detail, sizeof detail, "read %zd bytes of the disk", got);
    return allowed(detail);
}

static int fresh_directory(char *path, size_t size, const char *name)
{
    snprintf(path, size, "/tmp/escape-probe-%s-XXXXXX", name);
    return mkdtemp(path) ? 0 : -1;
}

static int cmd_mknod_mount(const char *majors, const char *minors, const char *fstype,
                           const char *marker)
{
    char node[256], target[256], path[4096], detail[4200];
    int status = make_node(majors, minors, node, sizeof node);
    if (status < 0)
        return failed("no writable directory without nodev for the node");
    if (status > 0)
        return refused(status, "mknod");
    if (fresh_directory(target, sizeof target, "disk") < 0) {
        unlink(node);
        return failed_errno("mkdtemp under /tmp");
    }
    int mounted = mount(node, target, fstype, 0, NULL);
    int saved = errno;
    unlink(node);
    if (mounted < 0) {
        rmdir(target);
        return refused(saved, "mount");
    }
    snprintf(detail, sizeof detail, "mounted the disk");
    if (marker) {
        snprintf(path, sizeof path, "%s/%s", target, marker);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            if (write(fd, "escaped\n", 8) != 8)
                saved = errno;
            close(fd);
            snprintf(detail, sizeof detail, "mounted the disk and wrote %s", marker);
        } else {
            snprintf(detail, sizeof detail, "mounted the disk; the marker: %s",
                     errname(errno));
        }
    }
    umount2(target, MNT_DETACH);
    rmdir(target);
    return allowed(detail);
}

static int mount_fresh(const char *source, const char *fstype, unsigned long flags,
                       const char *data)
{
    char target[256], detail[64];
    if (fresh_directory(target, sizeof target, fstype) < 0)
        return failed_errno("mkdtemp under /tmp");
    if (mount(source, target, fstype, flags, data) < 0) {
        int saved = errno;
        rmdir(target);
        return refused(saved, "mount");
    }
    umount2(target, MNT_DETACH);
    rmdir(target);
    snprintf(detail, sizeof detail, "mounted %s", fstype);
    return allowed(detail);
}

static int cmd_mount_cgroup(void)
{
    char target[256], detail[128] = "";
    static const struct {
        const char *fstype, *data, *name;
    } attempts[] = {{"cgroup2", NULL, "cgroup2"}, {"cgroup", "devices", "cgroup:devices"}};
    int first_error = 0;
    for (size_t i = 0; i < sizeof attempts / sizeof attempts[0]; i++) {
        if (fresh_directory(target, sizeof target, "cgroup") < 0)
            return failed_errno("mkdtemp under /tmp");
        int result = mount("cgroup", target, attempts[i].fstype, MS_NOSUID | MS_NODEV | MS_NOEXEC,
                           attempts[i].data);
        int saved = errno;
        if (result == 0) {
            umount2(target, MNT_DETACH);
            rmdir(target);
            snprintf(detail, sizeof detail, "mounted %s", attempts[i].name);
            return allowed(detail);
        }
        rmdir(target);
        if (!first_error)
            first_error = saved;
        note(detail, sizeof detail, attempts[i].name, saved);
    }
    return refused(first_error, detail);
}

static int cmd_remount_rw(const char *path)
{
    static const struct {
        unsigned long st, ms;
    } kept[] = {{ST_NOSUID, MS_NOSUID}, {ST_NODEV, MS_NODEV}, {ST_NOEXEC, MS_NOEXEC},
                {ST_NOATIME, MS_NOATIME}, {ST_NODIRATIME, MS_NODIRATIME},
                {ST_RELATIME, MS_RELATIME}};
    struct statvfs info;
    if (statvfs(path, &info) < 0)
        return failed_errno(path);
    if (!(info.f_flag & ST_RDONLY))
        return failed("the mount is read-write already");
    /* Keep the mount's other flags: only read-only is to go. */
    unsigned long flags = MS_REMOUNT | MS_BIND;
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        if (info.f_flag & kept[i].st)
            flags |= kept[i].ms;
    if (mount(NULL, path, NULL, flags, NULL) < 0)
        return refused(errno, "mount(MS_REMOUNT|MS_BIND)");
    if (statvfs(path, &info) == 0 && !(info.f_flag & ST_RDONLY))
        return allowed("now read-write");
    /* The mount is writable now, its filesystem is not: remount that too, as `mount -o
     * remount,rw` would (reached only when the first remount was allowed already). */
    if (mount(NULL, path, NULL, flags & ~(unsigned long)MS_BIND, NULL) < 0)
        return allowed("the mount is read-write, its filesystem stays read-only");
    return allowed("now read-write, the filesystem too");
}

static int cmd_init_module(void)
{
    char detail[160] = "";
    int results[3];
    errno = 0;
    results[0] = syscall(SYS_init_module, NULL, 0UL, "") < 0 ? errno : 0;
    errno = 0;
    results[1] = syscall(SYS_finit_module, -1, "", 0) < 0 ? errno : 0;
    errno = 0;
    results[2] = syscall(SYS_delete_module, "escape_probe_no_such_module", O_NONBLOCK) < 0
                     ? errno : 0;
    static const char *const names[] = {"init_module", "finit_module", "delete_module"};
    int reached = 0;
    for (int i = 0; i < 3; i++) {
        note(detail, sizeof detail, names[i], results[i]);
        if (results[i] != EPERM)
            reached = 1;
    }
    if (reached)
        return allowed(detail);
    return refused(EPERM, detail);
}

/* The first argument of unshare(2) and clone(2) that makes a namespace of KIND. */
static int namespace_flag(const char *kind)
{
    static const struct {
        const char *name;
        int flag;
    } kinds[] = {{"user", CLONE_NEWUSER}, {"mount", CLONE_NEWNS}, {"cgroup", CLONE_NEWCGROUP},
                 {"pid", CLONE_NEWPID},   {"net", CLONE_NEWNET},  {"ipc", CLONE_NEWIPC},
                 {"uts", CLONE_NEWUTS}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(kind, kinds[i].name))
            return kinds[i].flag;
    return 0;
}

/* The result of a fork-like clone: the child leaves at once; 0, or the parent's errno. */
static int collect(long pid)
{
    if (pid < 0)
        return errno;
    if (pid == 0)
        syscall(SYS_exit, 0);
    int status;
    waitpid((pid_t)pid, &status, __WALL);
    return 0;
}

static int cmd_unshare(const char *kind)
{
    char detail[160] = "";
    int flag = namespace_flag(kind);
    if (!flag)
        return failed("unshare: user, mount, cgroup, pid, net, ipc or uts");
    /* unshare(2) in a child, so the probe itself stays where it is (a new pid namespace
     * would change nothing for the caller anyway). */
    pid_t child = fork();
    if (child < 0)
        return failed_errno("fork");
    if (child == 0)
        _exit(unshare(flag) < 0 ? errno : 0);
    int status, by_unshare = 0;
    waitpid(child, &status, 0);
    by_unshare = WIFEXITED(status) ? WEXITSTATUS(status) : EINTR;
    note(detail, sizeof detail, "unshare", by_unshare);
    int by_clone = collect(syscall(SYS_clone, (unsigned long)flag | SIGCHLD, 0UL, NULL, NULL,
                                   0UL));
    note(detail, sizeof detail, "clone", by_clone);
    uint64_t arguments[8] = {(uint64_t)flag, 0, 0, 0, SIGCHLD, 0, 0, 0};
    int by_clone3 = collect(syscall(SYS_clone3, arguments, sizeof arguments));
    note(detail, sizeof detail, "clone3", by_clone3);
    if (!by_unshare || !by_clone || !by_clone3)
        return allowed(detail);
    return refused(by_unshare, detail);
}

static int cmd_tiocsti(const char *fds, const char *text)
{
    char detail[64];
    int fd = atoi(fds);
    size_t pushed = 0;
    for (const char *c = text; *c; c++) {
        if (ioctl(fd, TIOCSTI, c) < 0) {
            if (!pushed)
                return refused(errno, "ioctl(TIOCSTI)");
            break;
        }
        pushed++;
    }
    snprintf(detail, sizeof detail, "pushed %zu of %zu bytes", pushed, strlen(text));
    return allowed(detail);
}

static int cmd_keyctl(void)
{
    char detail[160] = "";
    int results[3];
    errno = 0;
    results[0] = syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID, KEY_SPEC_USER_KEYRING, 0) < 0
                     ? errno : 0;
    errno = 0;
    results[1] = syscall(SYS_add_key, "user", "escape-probe", "x", 1UL,
                         KEY_SPEC_PROCESS_KEYRING) < 0 ? errno : 0;
    errno = 0;
    results[2] = syscall(SYS_request_key, "user", "escape-probe-none", NULL, 0) < 0
                     ? errno : 0;
    static const char *const names[] = {"keyctl", "add_key", "request_key"};
    int reached = 0;
    for (int i = 0; i < 3; i++) {
        note(detail, sizeof detail, names[i], results[i]);
        if (results[i] != EPERM && results[i] != ENOSYS)
            reached = 1;
    }
    if (reached)
        return allowed(detail);
    return refused(results[0], detail);
}

static int cmd_pidfd_getfd(const char *pids, const char *maxfds)
{
    static const char forged[] = "\x7f\xff\xff\xff escape-probe: a forged message\n";
    char detail[512] = "";
    int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)atoi(pids), 0);
    if (pidfd < 0)
        return refused(errno, "pidfd_open");
    int last = atoi(maxfds), first_error = 0, taken = 0;
    for (int fd = 0; fd <= last; fd++) {
        int copy = (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
        if (copy < 0) {
            if (!first_error || first_error == EBADF)
                first_error = errno;
            continue;
        }
        taken++;
        struct stat info;
        size_t used = strlen(detail);
        if (fstat(copy, &info) == 0 && S_ISSOCK(info.st_mode)) {
            ssize_t sent = send(copy, forged, sizeof forged - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
            snprintf(detail + used, sizeof detail - used, " fd%d=socket(sent %zd)", fd, sent);
        } else {
            snprintf(detail + used, sizeof detail - used, " fd%d", fd);
        }
        close(copy);
    }
    close(pidfd);
    if (taken) {
        char line[600];
        snprintf(line, sizeof line, "took%s", detail);
        return allowed(line);
    }
    /* EBADF on every descriptor means the access check passed and nothing was open. */
    if (first_error == EBADF)
        return allowed("the access check passed (EBADF for every descriptor)");
    return refused(first_error, "pidfd_getfd");
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2)
        return failed("usage: probe SUBCOMMAND [ARG...] (see the top of escape_probe.c)");
    const char *command = argv[1];
    int count = argc - 2;
    char **args = argv + 2;
    if (!strcmp(command, "status") && count == 0)
        return cmd_status();
    if (!strcmp(command, "read") && count == 1)
        return cmd_read(args[0]);
    if (!strcmp(command, "open") && count == 1)
        return cmd_open(args[0]);
    if (!strcmp(command, "list") && count == 1)
        return cmd_list(args[0]);
    if (!strcmp(command, "readlink") && count == 1)
        return cmd_readlink(args[0]);
    if (!strcmp(command, "readlinks") && count == 1)
        return cmd_readlinks(args[0]);
    if (!strcmp(command, "write") && count == 2)
        return cmd_write(args[0], args[1]);
    if (!strcmp(command, "mknod-open") && count == 2)
        return cmd_mknod_open(args[0], args[1]);
    if (!strcmp(command, "mknod-mount") && (count == 3 || count == 4))
        return cmd_mknod_mount(args[0], args[1], args[2], count == 4 ? args[3] : NULL);
    if (!strcmp(command, "mount-proc") && count == 0)
        return mount_fresh("proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    if (!strcmp(command, "mount-tmpfs") && count == 0)
        return mount_fresh("tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k");
    if (!strcmp(command, "mount-cgroup") && count == 0)
        return cmd_mount_cgroup();
    if (!strcmp(command, "remount-rw") && count == 1)
        return cmd_remount_rw(args[0]);
    if (!strcmp(command, "init-module") && count == 0)
        return cmd_init_module();
    if (!strcmp(command, "unshare") && count == 1)
        return cmd_unshare(args[0]);
    if (!strcmp(command, "tiocsti") && count == 2)
        return cmd_tiocsti(args[0], args[1]);
    if (!strcmp(command, "keyctl") && count == 0)
        return cmd_keyctl();
    if (!strcmp(command, "pidfd-getfd") && count == 2)
        return cmd_pidfd_getfd(args[0], args[1]);
    return failed("unknown subcommand or wrong number of arguments (see escape_probe.c)");
}
