// Holding a process at an exact system call, for tests of races that sampling hits too rarely.
#pragma once

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fcntl.h>
#include <functional>
#include <thread>

namespace vstest {

// A seccomp user-notification filter hands this thread's lock calls (fcntl F_OFD_GETLK and
// F_OFD_SETLK), mmaps and unlinks to gate threads, which run on_call and then let the call
// go ahead unchanged: a way to stop a process at a precise point inside the library, or to
// change the segment under it there, without touching the library. Threads created after it
// are gated too. Call it in a forked child; false where seccomp user notification is not
// available. With several gate threads, on_call may wait for another gated call.
enum GateCall { kLockProbe, kLock, kMap, kUnlink };

inline bool install_gate(std::function<void(GateCall)> on_call, int gate_threads = 1)
{
#if defined(__x86_64__)
    const uint32_t arch = AUDIT_ARCH_X86_64;
    const uint32_t nr_unlink = __NR_unlink;
#elif defined(__aarch64__)
    const uint32_t arch = AUDIT_ARCH_AARCH64;
    const uint32_t nr_unlink = __NR_unlinkat;
#else
    return false;
#endif
    struct State {
        std::function<void(GateCall)> on_call;
        std::atomic<int> fd{-1};
    };
    auto *st = new State{std::move(on_call)}; // lives as long as the process
    for (int i = 0; i < gate_threads; i++)
        std::thread([st] { // started before the filter: their own calls are not gated
            int fd;
            while ((fd = st->fd.load()) == -1)
                usleep(100);
            for (;;) {
                seccomp_notif req;
                memset(&req, 0, sizeof req);
                if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0) {
                    if (errno == EINTR || errno == ENOENT)
                        continue;
                    return;
                }
                int nr = req.data.nr;
                st->on_call(nr == __NR_fcntl ? (req.data.args[1] == F_OFD_GETLK ? kLockProbe : kLock)
                            : nr == __NR_mmap ? kMap
                                              : kUnlink);
                seccomp_notif_resp resp;
                memset(&resp, 0, sizeof resp);
                resp.id = req.id;
                resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
                ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp);
            }
        }).detach();
    const uint32_t kArgs1 = offsetof(seccomp_data, args) + 8; // low half of args[1]
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 0, 9),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_unlinkat, 6, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr_unlink, 5, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 4, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fcntl, 0, 4),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, kArgs1),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, F_OFD_GETLK, 1, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, F_OFD_SETLK, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF), // 10
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),      // 11
    };
    sock_fprog prog{sizeof code / sizeof code[0], code};
    int fd = prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
                 ? (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER,
                                SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog)
                 : -1;
    st->fd = fd < 0 ? -2 : fd;
    return fd >= 0;
}


} // namespace vstest
