# pgberth: plain Makefile with pkg-config.
#   make              build/pgberth (installs missing Debian packages first)
#   make check        unit and end-to-end tests against a real PostgreSQL
#   make check-asan   the same, built with ASan + LSan + UBSan
#   make demo         throwaway PostgreSQL + pgberth, psql and pgbench through it
#   make bench        pgberth vs PgBouncer vs PostgreSQL (scripts/bench.sh; build/bench/)
#   make install      binary, docs, systemd units, sysusers.d file, example config
#                     (never over an existing one); PREFIX (/usr/local), DESTDIR,
#                     BINDIR, SYSCONFDIR (/etc), DOCDIR, UNITDIR, SYSUSERSDIR honoured
#   make uninstall    removes what install put there, except the config

PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR      ?= $(PREFIX)/bin
SYSCONFDIR  ?= /etc
DOCDIR      ?= $(PREFIX)/share/doc/pgberth
# systemd searches /usr/local/lib/systemd/system and /usr/local/lib/sysusers.d too.
UNITDIR     ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
BUILD   ?= build
CC      ?= cc
WERROR  ?= -Werror
OPT     ?= -O2
SAN     ?=
PKGS     = libpq libuv yaml-0.1 libsystemd

# Recursive (=) on purpose: pkg-config runs only after 'deps' has installed it.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS)) -lpthread
CHECK_LIBS = $(shell pkg-config --libs check)
WARN     = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes $(WERROR)
CFLAGS  ?= -g $(OPT)
ALL_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SAN) -Iinclude $(PKG_CFLAGS) -MMD -MP

ASAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

SRCS     = $(wildcard src/*.c)
LIB_OBJS = $(patsubst src/%.c,$(BUILD)/obj/%.o,$(filter-out src/main.c,$(SRCS)))
TESTS    = $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/check_*.c))
# Shell suites (tests/check_*.sh) are linked into BUILD/tests beside the
# binaries, so scripts/run-tests.sh runs and counts them the same way.
SCRIPT_TESTS = $(patsubst tests/%.sh,$(BUILD)/tests/%,$(wildcard tests/check_*.sh))
HARNESS  = $(patsubst tests/%.c,$(BUILD)/obj/tests/%.o,$(filter-out tests/check_%.c,$(wildcard tests/*.c)))

# Keep test objects: they are not throwaway intermediates.
.SECONDARY:

.PHONY: all deps build tests check check-asan demo bench install uninstall clean
all: deps
	@$(MAKE) --no-print-directory build

deps:
	@scripts/deps.sh

build: $(BUILD)/pgberth

$(BUILD)/pgberth: $(LIB_OBJS) $(BUILD)/obj/main.o
	$(CC) $(SAN) -o $@ $^ $(PKG_LIBS)

$(BUILD)/obj/%.o: src/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/obj/tests/%.o: tests/%.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(shell pkg-config --cflags check) -c -o $@ $<

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(HARNESS) $(LIB_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(SAN) -o $@ $^ $(CHECK_LIBS) $(PKG_LIBS)

$(SCRIPT_TESTS): $(BUILD)/tests/%: tests/%.sh
	@mkdir -p $(dir $@)
	ln -sf $(CURDIR)/$< $@

# LD_PRELOAD shims that the e2e suites load into the daemon (never sanitized:
# they are loaded before the runtime).
SHIMS = $(BUILD)/tests/faildup.so
$(BUILD)/tests/%.so: tests/shim/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(WARN) -g -O2 -shared -fPIC -o $@ $< -ldl

tests: build $(TESTS) $(SCRIPT_TESTS) $(SHIMS)

check: deps
	@$(MAKE) --no-print-directory tests
	@scripts/run-tests.sh $(BUILD)

check-asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan OPT=-O1 SAN="$(ASAN_FLAGS)" check

demo: all
	@scripts/demo.sh $(BUILD)

bench: all
	@$(MAKE) --no-print-directory $(BUILD)/bench/idle_clients $(BUILD)/bench/floor_relay
	@scripts/bench.sh $(BUILD)

# The idle-connection client that scripts/bench.sh drives: libpq only.
$(BUILD)/bench/idle_clients: bench/idle_clients.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SAN) $(shell pkg-config --cflags libpq) \
		-o $@ $< $(shell pkg-config --libs libpq)

# The yardstick relay that copies bytes and does nothing else: libc only.
$(BUILD)/bench/floor_relay: bench/floor_relay.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SAN) -o $@ $<

# The units name the installed paths, not DESTDIR's: they are written for the
# machine they end up on. With DESTDIR empty (a real install), install also
# creates the pgberth user and, when systemd is running, reloads its units.
UNIT_SUBST = sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
	-e 's|@DOCDIR@|$(DOCDIR)|g'
CONF = $(DESTDIR)$(SYSCONFDIR)/pgberth/pgberth.yaml

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(SYSCONFDIR)/pgberth
	install -m 755 $(BUILD)/pgberth $(DESTDIR)$(BINDIR)/pgberth
	install -m 644 conf/pgberth.yaml README.md $(DESTDIR)$(DOCDIR)/
	$(UNIT_SUBST) systemd/pgberth.service >$(DESTDIR)$(UNITDIR)/pgberth.service
	$(UNIT_SUBST) systemd/pgberth.socket >$(DESTDIR)$(UNITDIR)/pgberth.socket
	chmod 644 $(DESTDIR)$(UNITDIR)/pgberth.service $(DESTDIR)$(UNITDIR)/pgberth.socket
	install -m 644 systemd/pgberth.sysusers $(DESTDIR)$(SYSUSERSDIR)/pgberth.conf
	@if [ -e $(CONF) ]; then \
		install -m 644 conf/pgberth.yaml $(CONF).new; \
		echo "install: kept $(CONF); the new example is $(CONF).new"; \
	else \
		echo "install -m 644 conf/pgberth.yaml $(CONF)"; \
		install -m 644 conf/pgberth.yaml $(CONF); \
	fi
	@if [ -z "$(DESTDIR)" ] && command -v systemd-sysusers >/dev/null; then \
		echo "systemd-sysusers $(SYSUSERSDIR)/pgberth.conf"; \
		systemd-sysusers $(SYSUSERSDIR)/pgberth.conf; \
	fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		echo "systemctl daemon-reload"; \
		systemctl daemon-reload; \
	fi
	@echo "Next: set listen.socket_dir: /run/pgberth and your databases in $(SYSCONFDIR)/pgberth/pgberth.yaml,"
	@echo "then: systemctl enable --now pgberth.socket pgberth.service"

# Keeps the config (and the pgberth user): they are the administrator's.
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		echo "systemctl disable --now pgberth.socket pgberth.service"; \
		systemctl disable --now pgberth.socket pgberth.service 2>/dev/null || true; \
	fi
	rm -f $(DESTDIR)$(BINDIR)/pgberth
	rm -f $(DESTDIR)$(DOCDIR)/pgberth.yaml $(DESTDIR)$(DOCDIR)/README.md
	rmdir $(DESTDIR)$(DOCDIR) 2>/dev/null || true
	rm -f $(DESTDIR)$(UNITDIR)/pgberth.service $(DESTDIR)$(UNITDIR)/pgberth.socket
	rm -f $(DESTDIR)$(SYSUSERSDIR)/pgberth.conf
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
		echo "systemctl daemon-reload"; \
		systemctl daemon-reload; \
	fi
	@echo "uninstall: kept $(SYSCONFDIR)/pgberth and the user pgberth"

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
