/*
 * A namespace sandbox's init (its PID 1), exec'd by the Python init once it has dropped its
 * privileges (see zygote.py, Child.be_init): reap every child until the runtime exits, then
 * exit as it did: its exit code, or 128 + N for death by signal N (the shell's convention,
 * read back by the server). argv[1] is the runtime's pid.
 *
 * Native rather than Python only for memory: see lamina/sandbox/_native_init.py.
 */
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    /* exec made this process dumpable again (its binary is readable): then the function,
     * under the same uid, could write /proc/1/mem. Not dumpable, as the Python init was after
     * it dropped root. This runs while the sandbox waits in the pool, before any function. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
        _exit(1);
    }
    if (argc < 2) {
        return 1;
    }
    pid_t runtime = (pid_t)atoi(argv[1]);
    for (;;) {
        int status;
        pid_t pid = wait(&status);
        if (pid < 0) {
            _exit(1); /* no child left: the runtime was never ours */
        }
        if (pid == runtime) {
            if (WIFEXITED(status)) {
                _exit(WEXITSTATUS(status));
            }
            _exit(128 + WTERMSIG(status));
        }
    }
}
