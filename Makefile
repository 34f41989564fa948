# varslot: the one build entry.
#   make          libvarslot (static + shared) and the varslot CLI, into build/
#   make check    every test: the protocol model (spin), core suites plain, under ASan+UBSan,
#                 TSan and memcheck; CLI, preload shim, GStreamer plugin, Valgrind and install tests
#   make demo     the cross-process demo
#   make bench    benchmarks, printed as ratios against anchors measured in the same run, and
#                 build/bench/report.md with plots (make bench-publish copies them to docs/bench/)
#   make install  PREFIX (/usr/local), LIBDIR ($(PREFIX)/lib), DESTDIR; make uninstall

CC  ?= gcc
CXX ?= g++
B   := build

GTEST_SRC := /usr/src/googletest/googletest
WARN     := -Wall -Wextra -Werror
CFLAGS   ?= -O2 -g
CXXFLAGS ?= -O2 -g
# Valgrind's client-request headers (Debian's valgrind package): slots become memcheck blocks.
VALGRIND_CFLAGS = $(shell pkg-config --exists valgrind && echo -DVS_HAVE_VALGRIND)
CORE_CFLAGS    = -std=c11 $(WARN) -D_GNU_SOURCE -fPIC -fvisibility=hidden -Icore/include -Icore/src \
                 $(VALGRIND_CFLAGS)
TEST_CXXFLAGS := -std=c++17 $(WARN) -Wno-missing-field-initializers -Icore/include -Itests \
                 -isystem $(GTEST_SRC)/include

CORE_SRCS := $(wildcard core/src/*.c)
CORE_HDRS := $(wildcard core/src/*.h core/include/*.h)
# Each object's headers, as the compiler saw them (build/**/*.d, read at the end).
DEPFLAGS := -MMD -MP
CORE_TEST_SRCS := $(wildcard tests/core/*.cpp)

# The shared library's version: SOVERSION changes only when a release breaks the ABI.
VERSION   := 1.2.0
SOVERSION := 1

LIB_A  := $(B)/lib/libvarslot.a
LIB_SO := $(B)/lib/libvarslot.so
LIB_SO_REAL := $(B)/lib/libvarslot.so.$(VERSION)
PRELOAD := $(B)/lib/libvarslot-preload.so
PRELOAD_SRCS := $(wildcard preload/*.c)
GST_PLUGIN := $(B)/lib/gstreamer-1.0/libgstvarslot.so
GST_SRCS := $(wildcard gst-plugin/*.c)
# Recursive (=): evaluated when used, after scripts/install-deps has put GStreamer there.
GST_PKGS = gstreamer-1.0 gstreamer-base-1.0 gstreamer-video-1.0
GST_CFLAGS = $(shell pkg-config --cflags $(GST_PKGS))
GST_LIBS = $(shell pkg-config --libs $(GST_PKGS))
CLI    := $(B)/bin/varslot
DEMO   := $(B)/bin/varslot-demo

DEPS_STAMP := $(B)/.deps-ok

# $(call remember,FILE,TEXT): FILE holds TEXT, rewritten (and so newer than what depends on
# it) only when TEXT changes.
remember = @mkdir -p $(dir $(1)); echo '$(2)' | cmp -s - $(1) || echo '$(2)' >$(1)

.PHONY: all check demo bench bench-publish clean deps install uninstall FORCE check-core check-asan \
        check-tsan check-cli check-preload check-gst check-memcheck check-model check-demo \
        check-install check-mutants check-users test-programs test-programs-plain bench-programs
all: $(LIB_A) $(LIB_SO) $(PRELOAD) $(GST_PLUGIN) $(CLI) $(DEMO)

# Missing packages are installed once, by the project's own script.
$(DEPS_STAMP): scripts/install-deps
	@scripts/install-deps --check >/dev/null 2>&1 || scripts/install-deps
	@mkdir -p $(B) && touch $@
deps: $(DEPS_STAMP)

# ---- libvarslot ----
# The static library is what the preload shim links: initial-exec TLS there, because
# __tls_get_addr may call malloc.
$(B)/obj/a/%.o: core/src/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CORE_CFLAGS) $(DEPFLAGS) -DVS_TLS_INITIAL_EXEC -c $< -o $@
$(B)/obj/so/%.o: core/src/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CORE_CFLAGS) $(DEPFLAGS) -c $< -o $@

$(LIB_A): $(CORE_SRCS:core/src/%.c=$(B)/obj/a/%.o)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^
# The version script exports the public API only, in versioned nodes (core/varslot.map).
$(LIB_SO_REAL): $(CORE_SRCS:core/src/%.c=$(B)/obj/so/%.o) core/varslot.map
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,-soname,libvarslot.so.$(SOVERSION) -Wl,--version-script=core/varslot.map \
	    -o $@ $(filter %.o,$^) -pthread
# The symlinks as installed, so -Lbuild/lib -lvarslot also runs from the build tree.
$(LIB_SO): $(LIB_SO_REAL)
	ln -sf $(notdir $<) $(B)/lib/libvarslot.so.$(SOVERSION)
	ln -sf libvarslot.so.$(SOVERSION) $@

# ---- the LD_PRELOAD shim ----
# -fno-builtin: GCC must not treat our malloc as the builtin one (it would, for example, fold
# malloc+memset into a call to calloc). jemalloc is DT_NEEDED, so it is loaded before any
# malloc call; -z now keeps symbol resolution out of the middle of malloc.
# The shim sees only the public header: core/src's internals are not its business.
# Its soname lets a library that needs the shim (the tests' allocation counter) take whichever
# copy is preloaded, wherever it lies.
$(B)/obj/preload/%.o: preload/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(filter-out -Icore/src,$(CORE_CFLAGS)) -fno-builtin -Ipreload -Ipreload/include \
	    $(DEPFLAGS) -c $< -o $@
$(B)/obj/preload/cxx.o: preload/cxx.cpp | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -std=c++17 $(WARN) -fPIC -fvisibility=hidden -fno-builtin $(DEPFLAGS) -c $< -o $@
# Its link flags are remembered, so changing them relinks it.
PRELOAD_LDFLAGS := -Wl,-soname,$(notdir $(PRELOAD)) -Wl,--version-script=preload/exports.map -Wl,-z,now \
                   -Wl,--no-as-needed -ljemalloc -ldl -pthread
$(B)/obj/preload/ldflags: FORCE
	$(call remember,$@,$(PRELOAD_LDFLAGS))
$(PRELOAD): $(PRELOAD_SRCS:preload/%.c=$(B)/obj/preload/%.o) $(B)/obj/preload/cxx.o \
            $(CORE_SRCS:core/src/%.c=$(B)/obj/a/%.o) preload/exports.map $(B)/obj/preload/ldflags
	@mkdir -p $(dir $@)
	$(CXX) -shared -o $@ $(filter %.o,$^) $(PRELOAD_LDFLAGS)

# ---- the GStreamer plugin ----
# Linked with the shared library's objects: GStreamer dlopens plugins, and initial-exec TLS
# (the static library's) would compete for the little static TLS left after startup.
$(B)/obj/gst/%.o: gst-plugin/%.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -std=gnu11 -D_GNU_SOURCE $(WARN) -fPIC -fvisibility=hidden -Icore/include $(GST_CFLAGS) $(DEPFLAGS) -c $< -o $@
# Plus the shim's option parsers, for VARSLOT_SEGMENT's naming rule.
$(B)/obj/gst/options.o: preload/options.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -std=gnu11 -D_GNU_SOURCE $(WARN) -fPIC -fvisibility=hidden -Icore/include $(DEPFLAGS) -c $< -o $@
$(GST_PLUGIN): $(GST_SRCS:gst-plugin/%.c=$(B)/obj/gst/%.o) $(B)/obj/gst/options.o \
               $(CORE_SRCS:core/src/%.c=$(B)/obj/so/%.o)
	@mkdir -p $(dir $@)
	$(CC) -shared -o $@ $^ $(GST_LIBS) -pthread

# ---- the varslot tool: a user of the public header only ----
# Plus the shim's option table (preload/options.[ch]), which `varslot run` shares with it.
CLI_SRCS := $(wildcard cli/*.c) preload/options.c
CLI_CFLAGS = -std=c11 $(WARN) -D_GNU_SOURCE -Icore/include -DVS_VERSION='"$(VERSION)"'
$(CLI): $(CLI_SRCS) cli/cli.h preload/options.h $(LIB_A) core/include/varslot.h Makefile
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CLI_CFLAGS) -o $@ $(CLI_SRCS) $(LIB_A) -pthread

$(DEMO): scripts/demo/varslot-demo.c $(LIB_A) $(CORE_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CORE_CFLAGS) -o $@ $< $(LIB_A) -pthread

# ---- make install / make uninstall ----
# The installed CLI and varslot-memcheck look for the shim in ../lib beside themselves first
# (so a staged or moved copy uses its own), then in LIBDIR, which is built into them.
PREFIX     ?= /usr/local
BINDIR      = $(PREFIX)/bin
LIBDIR      = $(PREFIX)/lib
INCLUDEDIR  = $(PREFIX)/include
DATADIR     = $(PREFIX)/share
MANDIR      = $(DATADIR)/man
SUPPDIR     = $(DATADIR)/varslot
PKGCONFIGDIR = $(LIBDIR)/pkgconfig
GSTPLUGINDIR = $(LIBDIR)/gstreamer-1.0

INST := $(B)/install
INST_FILES  = $(BINDIR)/varslot $(BINDIR)/varslot-memcheck \
              $(INCLUDEDIR)/varslot.h $(INCLUDEDIR)/varslot/preload.h \
              $(LIBDIR)/libvarslot.so.$(VERSION) $(LIBDIR)/libvarslot.so.$(SOVERSION) \
              $(LIBDIR)/libvarslot.so $(LIBDIR)/libvarslot.a $(PKGCONFIGDIR)/varslot.pc \
              $(LIBDIR)/libvarslot-preload.so $(GSTPLUGINDIR)/libgstvarslot.so \
              $(SUPPDIR)/varslot.supp $(SUPPDIR)/gst.supp $(MANDIR)/man1/varslot.1

# The paths built into the installed files: rewritten, and so rebuilding them, only when one
# changes.
$(INST)/paths: FORCE
	$(call remember,$@,$(PREFIX) $(LIBDIR) $(INCLUDEDIR) $(SUPPDIR))
FORCE:

$(INST)/varslot: $(CLI_SRCS) cli/cli.h preload/options.h $(LIB_A) core/include/varslot.h $(INST)/paths
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CLI_CFLAGS) -DVS_LIBDIR='"$(LIBDIR)"' -o $@ $(CLI_SRCS) $(LIB_A) -pthread
$(INST)/varslot-memcheck: valgrind/varslot-memcheck $(INST)/paths
	sed -e "s|^installed_libdir=$$|installed_libdir='$(LIBDIR)'|" \
	    -e "s|^installed_suppdir=$$|installed_suppdir='$(SUPPDIR)'|" $< >$@
	grep -q "^installed_libdir='" $@ && grep -q "^installed_suppdir='" $@
# libdir relative to ${prefix} when it is under it, so pkg-config --define-prefix can move it.
$(INST)/varslot.pc: core/varslot.pc.in $(INST)/paths
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))|' \
	    -e 's|@INCLUDEDIR@|$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))|' \
	    -e 's|@VERSION@|$(VERSION)|' $< >$@

install: all $(INST)/varslot $(INST)/varslot-memcheck $(INST)/varslot.pc
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(INCLUDEDIR)/varslot $(DESTDIR)$(PKGCONFIGDIR) \
	    $(DESTDIR)$(GSTPLUGINDIR) $(DESTDIR)$(SUPPDIR) $(DESTDIR)$(MANDIR)/man1
	install -m 755 $(INST)/varslot $(INST)/varslot-memcheck $(DESTDIR)$(BINDIR)/
	install -m 644 core/include/varslot.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 preload/include/varslot/preload.h $(DESTDIR)$(INCLUDEDIR)/varslot/
	install -m 755 $(LIB_SO_REAL) $(PRELOAD) $(DESTDIR)$(LIBDIR)/
	ln -sf libvarslot.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libvarslot.so.$(SOVERSION)
	ln -sf libvarslot.so.$(SOVERSION) $(DESTDIR)$(LIBDIR)/libvarslot.so
	install -m 644 $(LIB_A) $(DESTDIR)$(LIBDIR)/
	install -m 644 $(INST)/varslot.pc $(DESTDIR)$(PKGCONFIGDIR)/
	install -m 755 $(GST_PLUGIN) $(DESTDIR)$(GSTPLUGINDIR)/
	install -m 644 valgrind/varslot.supp valgrind/gst.supp $(DESTDIR)$(SUPPDIR)/
	install -m 644 cli/varslot.1 $(DESTDIR)$(MANDIR)/man1/

# Removes what install put there, and the directories only varslot uses if they are empty.
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INST_FILES))
	rmdir $(DESTDIR)$(INCLUDEDIR)/varslot $(DESTDIR)$(SUPPDIR) 2>/dev/null || true

# ---- test programs: one build graph ----
# Every program a suite runs is a target here; the scripts under tests/ and scripts/ only run
# what make built (by hand they call make for their programs first, tests/need.sh).
#
# GoogleTest (gtest-all.o) and the shared main (tests/gtest_main.cpp) are compiled once per
# flavour, from Debian's source package with the flavour's flags so the sanitizers see all of
# it, and every suite of that flavour links the same objects. The core is built with its debug
# tier (VS_DEBUG: internal assertions, core/src/debug.h) in every test flavour; the release
# library is not.
define flavour
$(B)/$(1)/obj/core/%.o: core/src/%.c | $(DEPS_STAMP)
	@mkdir -p $$(dir $$@)
	$(CC) $(CFLAGS) $(2) $(CORE_CFLAGS) $(DEPFLAGS) -DVS_DEBUG -c $$< -o $$@
$(B)/$(1)/obj/tests/core/%.o: tests/core/%.cpp | $(DEPS_STAMP)
	@mkdir -p $$(dir $$@)
	$(CXX) $(CXXFLAGS) $(2) $(TEST_CXXFLAGS) $(DEPFLAGS) -c $$< -o $$@
$(B)/$(1)/obj/gtest-all.o: | $(DEPS_STAMP)
	@mkdir -p $$(dir $$@)
	$(CXX) $(CXXFLAGS) $(2) -std=c++17 -isystem $(GTEST_SRC)/include -I$(GTEST_SRC) $(DEPFLAGS) \
	    -c $(GTEST_SRC)/src/gtest-all.cc -o $$@
$(B)/$(1)/obj/gtest_main.o: tests/gtest_main.cpp | $(DEPS_STAMP)
	@mkdir -p $$(dir $$@)
	$(CXX) $(CXXFLAGS) $(2) $(TEST_CXXFLAGS) $(DEPFLAGS) -c $$< -o $$@
$(B)/$(1)/tests/core_tests: $(CORE_SRCS:core/src/%.c=$(B)/$(1)/obj/core/%.o) \
                            $(CORE_TEST_SRCS:tests/core/%.cpp=$(B)/$(1)/obj/tests/core/%.o) \
                            $(B)/$(1)/obj/gtest-all.o $(B)/$(1)/obj/gtest_main.o
	@mkdir -p $$(dir $$@)
	$(CXX) $(2) -o $$@ $$^ -pthread
endef

SAN_ASAN := -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
SAN_TSAN := -O1 -fsanitize=thread
$(eval $(call flavour,plain,))
$(eval $(call flavour,asan,$(SAN_ASAN)))
$(eval $(call flavour,tsan,$(SAN_TSAN)))

TESTS_PLAIN := $(B)/plain/tests/core_tests
TESTS_ASAN  := $(B)/asan/tests/core_tests
TESTS_TSAN  := $(B)/tsan/tests/core_tests
GTEST_PLAIN := $(B)/plain/obj/gtest-all.o $(B)/plain/obj/gtest_main.o

# The shim's suites, plain flavour only. Never under ASan or TSan: they run with
# libvarslot-preload.so in LD_PRELOAD, and a sanitizer's runtime replaces malloc itself (it
# insists on coming first in the library list, where the shim must be), so the allocator the
# tests call would not be the shim; the semantics suite also pins glibc's own behaviour
# (usable sizes, mallinfo, mallopt), which a sanitizer's allocator does not have. The
# semantics binary links nothing of varslot: it must also run, and pass, against plain glibc.
# -fno-builtin (shim suite): the compiler must not fold or drop the malloc/free pairs under
# test (the semantics suite hides its sizes with opaque() instead).
PRELOAD_TEST_CXXFLAGS := -O1 -g -std=c++17 $(WARN) -isystem $(GTEST_SRC)/include -Icore/include \
                         -Ipreload/include
SHIM_TEST_SRCS := $(wildcard tests/preload/shim/*.cpp)
SEMANTICS_TEST_SRCS := $(wildcard tests/preload/semantics/*.cpp)
SHIM_TESTS := $(B)/plain/tests/shim_tests
SEMANTICS := $(B)/plain/tests/semantics_tests
$(B)/plain/obj/tests/preload/shim/%.o: tests/preload/shim/%.cpp | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(PRELOAD_TEST_CXXFLAGS) -fno-builtin $(DEPFLAGS) -c $< -o $@
$(SHIM_TESTS): $(SHIM_TEST_SRCS:tests/%.cpp=$(B)/plain/obj/tests/%.o) $(GTEST_PLAIN) $(LIB_A)
	@mkdir -p $(dir $@)
	$(CXX) -o $@ $^ -ldl -pthread
$(B)/plain/obj/tests/preload/semantics/%.o: tests/preload/semantics/%.cpp | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) $(PRELOAD_TEST_CXXFLAGS) $(DEPFLAGS) -c $< -o $@
$(SEMANTICS): $(SEMANTICS_TEST_SRCS:tests/%.cpp=$(B)/plain/obj/tests/%.o) $(GTEST_PLAIN)
	@mkdir -p $(dir $@)
	$(CXX) -o $@ $^ -pthread -ldl

# The programs around them. The caller library must really call malloc: no sibling calls
# (a tail call would make malloc's return address the test binary's, not the library's).
CALLER_LIB := $(B)/tests/libvstest-caller.so
PEER       := $(B)/tests/vstest-peer
MT_ALLOC   := $(B)/tests/mt-alloc
COUNTER    := $(B)/tests/libvstest-count.so
$(CALLER_LIB): tests/preload/caller_lib.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -fno-optimize-sibling-calls $(WARN) -shared -fPIC $(DEPFLAGS) $< -o $@
$(PEER): tests/preload/peer.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -O1 -g $(WARN) -Icore/include -Ipreload/include $(DEPFLAGS) $< -o $@ -ldl
$(MT_ALLOC): tests/preload/mt-alloc.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -O2 -g $(WARN) $(DEPFLAGS) $< -o $@ -pthread
# The counter preloaded in front of the shim needs it (DT_NEEDED, by the shim's soname, so it
# takes whichever shim is preloaded): its constructor then runs after the shim's.
$(COUNTER): tests/preload/count-large.c $(PRELOAD) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -O2 -g $(WARN) -shared -fPIC -fexceptions $(DEPFLAGS) $< -o $@ \
	    -Wl,--no-as-needed -L$(dir $(PRELOAD)) -l:$(notdir $(PRELOAD)) -ldl -pthread
PRELOAD_TEST_PROGS := $(SHIM_TESTS) $(SEMANTICS) $(CALLER_LIB) $(PEER) $(MT_ALLOC) $(COUNTER)

# The GStreamer plugin's suite: every tests/gst/*.cpp (a *_test.cpp per part of the plugin,
# their main and helpers) in one binary, with the plugin's own wire code (hand-made peers
# speak it) and libvarslot.a (they are real peers of real segments). Plain only: it runs under GStreamer's leaks tracer, and the plugin it loads is
# the release build, the one installed. The build tree's paths are compiled in (the test's
# environment may override them); build/tests/paths rebuilds the objects when they move.
GST_TEST_PKGS = gstreamer-1.0 gstreamer-check-1.0 gstreamer-app-1.0 gstreamer-video-1.0
GST_TEST_SRCS := $(wildcard tests/gst/*.cpp)
GST_TEST_WIRE := $(B)/obj/gst/protocol.o
GST_TESTS := $(B)/plain/tests/gst_tests
GST_TEST_DIRS = $(abspath $(dir $(GST_PLUGIN))) $(abspath $(CLI)) $(abspath $(B))/tests/gst-registry-unit.bin
GST_TEST_PATHS = -DVSTEST_PLUGIN_DIR='"$(word 1,$(GST_TEST_DIRS))"' -DVSTEST_VARSLOT_CLI='"$(word 2,$(GST_TEST_DIRS))"' \
                 -DVSTEST_REGISTRY='"$(word 3,$(GST_TEST_DIRS))"'
$(B)/tests/paths: FORCE
	$(call remember,$@,$(GST_TEST_DIRS))
$(B)/plain/obj/tests/gst/%.o: tests/gst/%.cpp $(B)/tests/paths | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) -O1 -g -std=c++17 $(WARN) -Wno-missing-field-initializers -isystem $(GTEST_SRC)/include \
	    -Icore/include $(GST_TEST_PATHS) $(shell pkg-config --cflags $(GST_TEST_PKGS)) $(DEPFLAGS) -c $< -o $@
$(GST_TESTS): $(GST_TEST_SRCS:tests/%.cpp=$(B)/plain/obj/tests/%.o) $(GST_TEST_WIRE) \
              $(B)/plain/obj/gtest-all.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CXX) -o $@ $^ $(shell pkg-config --libs $(GST_TEST_PKGS)) -pthread
# A small runner that prints element counters at EOS (gst-launch cannot): tests and demo.
GST_RUN := $(B)/tests/vstest-gst-run
$(GST_RUN): tests/gst/run-pipeline.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -std=gnu11 $(WARN) $(GST_CFLAGS) $(DEPFLAGS) $< -o $@ $(GST_LIBS)
GST_TEST_PROGS := $(GST_TESTS) $(GST_RUN)

# The CLI's slot holder links the static library; the planted defects are built at -O0, so
# memcheck reports them at the very lines test-memcheck.sh looks for.
HOLD_SLOTS := $(B)/tests/hold-slots
PLANTED    := $(B)/tests/vstest-planted
$(HOLD_SLOTS): tests/cli/hold-slots.c $(LIB_A) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -O1 -g $(WARN) -Icore/include $(DEPFLAGS) $< $(LIB_A) -o $@ -pthread
$(PLANTED): tests/valgrind/planted.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -O0 -g $(WARN) -Icore/include -Ipreload/include $(DEPFLAGS) $< -o $@ -ldl
PLANTED_SHARE := $(B)/tests/vstest-planted-share
$(PLANTED_SHARE): tests/valgrind/planted-share.c $(LIB_A) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -O0 -g $(WARN) -Icore/include $(DEPFLAGS) $< $(LIB_A) -o $@ -pthread
# The users suite's hand-over helper, a peer of another user's segment.
USERS_HELPER := $(B)/tests/hand-over
$(USERS_HELPER): tests/users/hand-over.c $(LIB_A) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -std=c11 $(WARN) -D_GNU_SOURCE -Icore/include $(DEPFLAGS) $< $(LIB_A) -o $@ -pthread

# The terminal `varslot top` is tested on: a pseudo-terminal the test types into and resizes.
PTY_RUN := $(B)/tests/pty-run
$(PTY_RUN): tests/cli/pty-run.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -std=gnu11 $(WARN) $(DEPFLAGS) $< -o $@ -lutil

# Every test program without running any: plain (what the shell suites run), and all flavours.
test-programs-plain: all $(TESTS_PLAIN) $(PRELOAD_TEST_PROGS) $(GST_TEST_PROGS) $(HOLD_SLOTS) $(PLANTED) $(PLANTED_SHARE) \
                     $(USERS_HELPER) $(PTY_RUN)
test-programs: test-programs-plain $(TESTS_ASAN) $(TESTS_TSAN)

# ---- make check ----
check: check-model check-core check-asan check-tsan check-cli check-preload check-gst check-memcheck check-demo \
       check-install check-users
	@echo "make check: all suites passed"

# The README's first command must keep working: the demo runs to its end.
check-demo: demo

# make install into scratch prefixes and a DESTDIR, used from there as a user would, then
# make uninstall (tests/install/test-install.sh; about 20 seconds).
check-install: all
	timeout 300 tests/install/test-install.sh

# Opt-in (not in make check): each tests/mutants/*.mutant, a deliberate bug in the real
# sources, must turn its test red (tests/run-mutants.sh; about 10 minutes).
check-mutants: all
	timeout 1800 tests/run-mutants.sh

# The protocol model (core/model/): every property exhaustively with spin, every mutant caught.
check-model: $(DEPS_STAMP)
	timeout 1200 core/model/check

# Every suite runs under a timeout: a hang is a failure, not a stuck CI job.
check-core: $(TESTS_PLAIN) all
	timeout 600 $(TESTS_PLAIN) --gtest_brief=1
check-asan: $(TESTS_ASAN)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    timeout 900 $(TESTS_ASAN) --gtest_brief=1
check-tsan: $(TESTS_TSAN)
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	    timeout 1200 scripts/run-tsan $(TESTS_TSAN) --gtest_brief=1
check-cli: all $(HOLD_SLOTS) $(PTY_RUN)
	timeout 300 tests/cli/test-cli.sh $(CLI)

# The shim's suites: glibc semantics of the malloc family (plain and in every shim mode),
# routing, cross-process, fork, exhaustion and bad options, and real unmodified programs
# (python3, sort, xz, gcc, perl, a threaded C program) with and without the shim; the option
# table against varslot run, its help, the man page and README, and how bad values are warned.
check-preload: all $(PRELOAD_TEST_PROGS)
	timeout 1800 tests/preload/run-semantics.sh
	timeout 900 tests/preload/run-shim-tests.sh
	timeout 900 tests/preload/test-real-programs.sh
	timeout 300 tests/preload/test-options.sh

# The GStreamer plugin: GstHarness unit tests (allocator, pool, ALLOCATION answer, metadata
# round trip, zero copy) and real two-process gst-launch pipelines (checksums, kills, fan-out).
check-gst: all $(GST_TEST_PROGS)
	timeout 1800 tests/gst/run-gst-tests.sh

# Memcheck: the core suites under Valgrind with 0 errors and no definite leak (VSTEST_SLOW
# shortens the stress loops: Valgrind runs one thread at a time, some 50x slower), then
# planted defects and a cross-process hand-over through valgrind/varslot-memcheck, and a
# varslotsink/varslotsrc pipeline pair under memcheck.
check-memcheck: $(TESTS_PLAIN) all $(PLANTED) $(PLANTED_SHARE)
	VSTEST_SLOW=1 timeout 1200 valgrind -q --error-exitcode=9 --leak-check=full --show-leak-kinds=definite \
	    --errors-for-leak-kinds=definite $(TESTS_PLAIN) --gtest_brief=1
	timeout 900 tests/valgrind/test-memcheck.sh

# Sharing a segment between real users (useradd; as root, else it prints SKIP): trusted
# opens, a refused outsider, a slot handed across users, a cross-user reap, and
# varslotsink/varslotsrc of two users.
check-users: all $(USERS_HELPER) $(GST_RUN)
	timeout 300 tests/users/test-users.sh $(CLI) $(USERS_HELPER) $(GST_RUN) $(dir $(GST_PLUGIN))

demo: all $(GST_RUN)
	scripts/demo/run-demo

# The benchmarks' programs; scripts/bench* only run them.
BENCH := $(B)/bench/bench_core
BENCH_PRELOAD := $(B)/bench/bench_preload_alloc
BENCH_GST := $(B)/bench/bench_gst
$(BENCH): tests/bench/bench_core.cpp $(LIB_A) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CXX) -O2 -g -std=c++17 $(WARN) -Icore/include $(DEPFLAGS) $< $(LIB_A) -o $@ -pthread -lrt
$(BENCH_PRELOAD): tests/bench/bench_preload_alloc.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -O2 -g $(WARN) $(DEPFLAGS) $< -o $@
$(BENCH_GST): tests/bench/bench_gst.c | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -O2 -g $(WARN) $(GST_CFLAGS) $(DEPFLAGS) $< -o $@ $(GST_LIBS)
bench-programs: all $(BENCH) $(BENCH_PRELOAD) $(BENCH_GST)
bench: bench-programs
	scripts/bench
	scripts/bench-preload
	scripts/bench-gst
	scripts/bench-report

# The README's plots: the last make bench's report and PNGs, copied into docs/bench/ to be
# committed (say in the README when and where they were measured).
bench-publish:
	test -s $(B)/bench/report.md || { echo "make bench-publish: run make bench first" >&2; exit 1; }
	mkdir -p docs/bench
	cp $(B)/bench/report.md $(B)/bench/*.png docs/bench/

clean:
	rm -rf $(B)

# The header dependencies the compiler wrote (none before the first build).
-include $(shell find $(B) -name '*.d' 2>/dev/null)
