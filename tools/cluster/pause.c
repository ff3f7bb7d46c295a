/*
 * The pod sandbox ("pause") process of the one-node cluster (scripts/cluster.sh).
 *
 * It holds the pod's namespaces open and does nothing else: it sleeps until
 * SIGTERM or SIGINT (as PID 1 of the pod a signal without a handler would be
 * ignored, so both get one) and reaps any child re-parented to it, so zombies
 * never pile up in a pod that shares its PID namespace. Built with
 * `gcc -static` so the image needs nothing but this one file.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stopping = 0;

static void on_stop(int sig) {
    (void)sig;
    stopping = 1;
}

static void on_child(int sig) {
    (void)sig;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int sig, void (*fn)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = (sig == SIGCHLD) ? (SA_RESTART | SA_NOCLDSTOP) : 0;
    return sigaction(sig, &sa, NULL);
}

int main(void) {
    static const char banner[] = "foldline pause: holding the pod's namespaces\n";
    if (handle(SIGTERM, on_stop) || handle(SIGINT, on_stop) || handle(SIGCHLD, on_child)) {
        static const char msg[] = "foldline pause: cannot install signal handlers\n";
        (void)!write(2, msg, sizeof msg - 1);
        return 1;
    }
    /* Block the signals and wait with sigsuspend, which unblocks them atomically:
     * a SIGTERM arriving between the check and the wait cannot be missed. */
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &waitmask);
    sigdelset(&waitmask, SIGTERM);
    sigdelset(&waitmask, SIGINT);
    sigdelset(&waitmask, SIGCHLD);
    (void)!write(1, banner, sizeof banner - 1);
    while (!stopping) {
        sigsuspend(&waitmask);
    }
    return 0;
}
