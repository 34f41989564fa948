/* The one-byte OFD locks that stand for liveness and for the creating, reaping and joining
 * steps. An OFD lock belongs to an open file description and dies with it, whatever process
 * held it: which descriptions carry them, and how fork children let go of them, is fork.c. */
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- one-byte locks ---- */

static int ofd_lock(int fd, off_t off, short type, int cmd, struct flock *fl)
{
    memset(fl, 0, sizeof *fl);
    fl->l_type = type;
    fl->l_whence = SEEK_SET;
    fl->l_start = off;
    fl->l_len = 1;
    return fcntl(fd, cmd, fl);
}

int vs__lock_byte(int fd, off_t off)
{
    struct flock fl;
    return ofd_lock(fd, off, F_WRLCK, F_OFD_SETLK, &fl);
}

int vs__lock_byte_shared(int fd, off_t off)
{
    struct flock fl;
    return ofd_lock(fd, off, F_RDLCK, F_OFD_SETLK, &fl);
}

int vs__unlock_byte(int fd, off_t off)
{
    struct flock fl;
    return ofd_lock(fd, off, F_UNLCK, F_OFD_SETLK, &fl);
}

int vs__byte_locked_elsewhere(int fd, off_t off)
{
    struct flock fl;
    if (ofd_lock(fd, off, F_WRLCK, F_OFD_GETLK, &fl) != 0)
        return -1;
    return fl.l_type != F_UNLCK;
}

int vs__lock_byte_wait(int fd, off_t off, bool shared, int max_ms)
{
    for (int waited = 0;; waited++) {
        if ((shared ? vs__lock_byte_shared(fd, off) : vs__lock_byte(fd, off)) == 0)
            return 0;
        if ((errno != EAGAIN && errno != EACCES) || waited >= max_ms)
            return -1;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
}
