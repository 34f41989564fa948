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
#include <vector>

namespace vstest {

#if defined(__x86_64__)
constexpr uint32_t kGateArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
constexpr uint32_t kGateArch = AUDIT_ARCH_AARCH64;
#endif

// A system call to stop at: any call of number nr, or only those whose argument arg has the
// low 32 bits value.
struct Rule {
    int nr;
    int arg = -1;       // -1: any arguments
    uint32_t value = 0; // the low half of args[arg]
};

// The unlink calls of this architecture (unlink(2) does not exist on arm64).
inline std::vector<Rule> unlink_rules()
{
    std::vector<Rule> r{{__NR_unlinkat}};
#ifdef __NR_unlink
    r.push_back({__NR_unlink});
#endif
    return r;
}

// Installs a filter on the calling thread (and threads it creates later) that answers the
// calls of rules with action. The result of seccomp(2): a listener fd for
// SECCOMP_FILTER_FLAG_NEW_LISTENER, 0 else; -1 where that cannot be done.
inline int install_filter(const std::vector<Rule> &rules, uint32_t action, unsigned flags)
{
#if defined(__x86_64__) || defined(__aarch64__)
    std::vector<sock_filter> code;
    code.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
    code.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kGateArch, 1, 0));
    code.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    for (const Rule &r : rules) {
        code.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)));
        if (r.arg < 0) {
            code.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)r.nr, 0, 1));
        } else {
            code.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)r.nr, 0, 3));
            code.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
                                    (uint32_t)(offsetof(seccomp_data, args) + 8 * r.arg)));
            code.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, r.value, 0, 1));
        }
        code.push_back(BPF_STMT(BPF_RET | BPF_K, action));
    }
    code.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    sock_fprog prog{(unsigned short)code.size(), code.data()};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        return -1;
    return (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
#else
    (void)rules;
    (void)action;
    (void)flags;
    return -1;
#endif
}

// Holds the calling thread at these calls while on_call runs on a gate thread, then lets the
// call go ahead unchanged (a call interrupted meanwhile, by pthread_cancel for one, comes
// back as a new notification if it is restarted): a way to stop a process at a precise
// point inside the library, or to change the segment under it there, without touching the
// library. Threads created after it are held too. Call it in a forked child; false where
// seccomp user notification is not available. With several gate threads, on_call may wait
// for another held call.
inline bool hold_at(const std::vector<Rule> &rules, std::function<void(const seccomp_notif &)> on_call,
                    int gate_threads = 1)
{
    struct State {
        std::function<void(const seccomp_notif &)> on_call;
        std::atomic<int> fd{-1};
    };
    auto *st = new State{std::move(on_call)}; // lives as long as the process
    for (int i = 0; i < gate_threads; i++)
        std::thread([st] { // started before the filter: their own calls are not held
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
                st->on_call(req);
                seccomp_notif_resp resp;
                memset(&resp, 0, sizeof resp);
                resp.id = req.id;
                resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
                ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp); // ENOENT if the call was interrupted
            }
        }).detach();
    int fd = install_filter(rules, SECCOMP_RET_USER_NOTIF, SECCOMP_FILTER_FLAG_NEW_LISTENER);
    st->fd = fd < 0 ? -2 : fd;
    return fd >= 0;
}

// The library's lock calls (fcntl F_OFD_GETLK and F_OFD_SETLK), mmaps and unlinks, held as
// hold_at does.
enum GateCall { kLockProbe, kLock, kMap, kUnlink };

inline bool install_gate(std::function<void(GateCall)> on_call, int gate_threads = 1)
{
    std::vector<Rule> rules{{__NR_fcntl, 1, F_OFD_GETLK}, {__NR_fcntl, 1, F_OFD_SETLK}, {__NR_mmap}};
    for (const Rule &r : unlink_rules())
        rules.push_back(r);
    return hold_at(
        rules,
        [on_call](const seccomp_notif &req) {
            int nr = req.data.nr;
            on_call(nr == __NR_fcntl ? ((int)req.data.args[1] == F_OFD_GETLK ? kLockProbe : kLock)
                    : nr == __NR_mmap ? kMap
                                      : kUnlink);
        },
        gate_threads);
}

} // namespace vstest
