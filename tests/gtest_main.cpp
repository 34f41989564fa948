// Entry point of the GoogleTest suites (core, preload shim, preload semantics), compiled once
// per build flavour. Children forked by tests must never run the parent's remaining tests, so
// every spawn() helper ends in _exit; nothing else is special here.
#include <gtest/gtest.h>

#include <csignal>

int main(int argc, char **argv)
{
    std::signal(SIGPIPE, SIG_IGN); // a test writing to a dead peer's pipe gets EPIPE instead
    testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
