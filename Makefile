# pgberth: plain Makefile with pkg-config.
#   make              build/pgberth (installs missing Debian packages first)
#   make check        unit and end-to-end tests against a real PostgreSQL
#   make check-asan   the same, built with ASan + LSan + UBSan
#   make demo         throwaway PostgreSQL + pgberth, psql and pgbench through it
#   make bench        pgberth vs PgBouncer vs PostgreSQL (scripts/bench.sh; build/bench/)
#   make install      PREFIX (/usr/local) and DESTDIR honoured

PREFIX  ?= /usr/local
DESTDIR ?=
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
HARNESS  = $(patsubst tests/%.c,$(BUILD)/obj/tests/%.o,$(filter-out tests/check_%.c,$(wildcard tests/*.c)))

# Keep test objects: they are not throwaway intermediates.
.SECONDARY:

.PHONY: all deps build tests check check-asan demo bench install clean
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

tests: build $(TESTS)

check: deps
	@$(MAKE) --no-print-directory tests
	@scripts/run-tests.sh $(BUILD)

check-asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan OPT=-O1 SAN="$(ASAN_FLAGS)" check

demo: all
	@scripts/demo.sh $(BUILD)

bench: all
	@$(MAKE) --no-print-directory $(BUILD)/bench/idle_clients
	@scripts/bench.sh $(BUILD)

# The idle-connection client that scripts/bench.sh drives: libpq only.
$(BUILD)/bench/idle_clients: bench/idle_clients.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(WARN) $(CFLAGS) $(SAN) $(shell pkg-config --cflags libpq) \
		-o $@ $< $(shell pkg-config --libs libpq)

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/doc/pgberth
	install -m 755 $(BUILD)/pgberth $(DESTDIR)$(PREFIX)/bin/pgberth
	install -m 644 conf/pgberth.yaml README.md $(DESTDIR)$(PREFIX)/share/doc/pgberth/

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
