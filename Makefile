# senderwatch: one GNU Makefile for both daemons, the tests and the bench.
#
#   make            build build/senderwatch-shim and build/senderwatch-alerter
#   make run        install what is missing, build, run a private Redis, the
#                   shim, the alerter and a local mail sink (quick start)
#   make test       install what tests need, run unit and integration tests
#   make bench      decisions/s, latency, CPU and memory: the shim against a floor
#                   server, one Redis against a Cluster, alert latency
#   make SAN=1 ...  the same with AddressSanitizer and UBSan
#   make clean

VERSION	:= 0.1.0
B	:= build

PKGS	:= hiredis yaml-0.1 libcurl
CC	?= cc
CFLAGS	?= -O2 -g
WARN	:= -Wall -Wextra -Wshadow -Wpointer-arith -Wmissing-prototypes \
	   -Wstrict-prototypes -Wformat=2 -Wno-format-nonliteral \
	   -Wno-unused-function
ifeq ($(CI),true)
WARN	+= -Werror
endif
ifdef WERROR
WARN	+= -Werror
endif
ifdef SAN
CFLAGS	+= -fsanitize=address,undefined -fno-omit-frame-pointer
LDFLAGS	+= -fsanitize=address,undefined
endif

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
sysconfdir ?= /etc
CPPFLAGS += -D_GNU_SOURCE -DSW_VERSION='"$(VERSION)"' \
	    -DSW_SYSCONFDIR='"$(sysconfdir)"' -Icommon -I$(B)
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) $(PKG_CFLAGS) -MMD -MP

COMMON_SRC	:= $(wildcard common/*.c)
SHIM_SRC	:= $(wildcard shim/*.c)
ALERTER_SRC	:= $(wildcard alerter/*.c)

LUA_SRC		:= $(wildcard scripts/*.lua)
LUA_OBJ		:= $(LUA_SRC:scripts/%.lua=$(B)/scripts/%_lua.o)
COMMON_OBJ	:= $(COMMON_SRC:%.c=$(B)/%.o) $(LUA_OBJ)
SHIM_OBJ	:= $(SHIM_SRC:%.c=$(B)/%.o)
ALERTER_OBJ	:= $(ALERTER_SRC:%.c=$(B)/%.o)
# Everything but main.c, for the unit tests to link against.
SHIM_LIB	:= $(filter-out $(B)/shim/main.o,$(SHIM_OBJ))
ALERTER_LIB	:= $(filter-out $(B)/alerter/main.o,$(ALERTER_OBJ))

UNIT_SRC	:= $(wildcard tests/unit/test_*.c)
UNIT_BIN	:= $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

BINS := $(B)/senderwatch-shim
ifneq ($(ALERTER_SRC),)
BINS += $(B)/senderwatch-alerter
endif

# Debian packages: what running needs, and what the tests add.
RUN_DEBS  := build-essential pkg-config libhiredis-dev libev-dev \
	     libyaml-dev libcurl4-openssl-dev redis-server redis-tools \
	     python3 python3-aiosmtpd
# Postfix conflicts with exim4, so the tests run it unpacked from its .deb
# (tests/integration/postfix.py): only its libraries are installed.
TEST_DEBS := $(RUN_DEBS) exim4-daemon-light python3-pytest systemd monit \
	     valgrind clang libclang-rt-14-dev openssl swaks libdb5.3 \
	     libicu72 libnsl2 libsasl2-2 libssl3 redis-sentinel

.PHONY: all deps deps-test run test unit integration bench fuzz valgrind clean \
	FORCE

all: $(BINS) $(B)/sw-bench

$(B)/senderwatch-shim: $(SHIM_OBJ) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lev

$(B)/senderwatch-alerter: $(ALERTER_OBJ) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lev

$(B)/sw-bench: tests/bench/bench.c $(B)/.flags
	@mkdir -p $(@D)
	$(CC) -std=c11 $(WARN) $(CFLAGS) $(LDFLAGS) -o $@ $< -lev -lm

# Objects depend on the flags they were built with: `make SAN=1` after a
# plain build rebuilds everything instead of mixing the two.
FLAGS_NOW := $(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(LDFLAGS)
$(B)/.flags: FORCE
	@mkdir -p $(@D)
	@echo '$(FLAGS_NOW)' | cmp -s - $@ || echo '$(FLAGS_NOW)' > $@
FORCE:

$(B)/%.o: %.c $(B)/.flags
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

# The Lua scripts are compiled in, each with the SHA-1 Redis names it by:
# a daemon and its scripts cannot drift, and EVALSHA needs no round trip
# to learn the name.
$(B)/scripts/%_lua.c: scripts/%.lua
	@mkdir -p $(@D)
	{ printf 'const char script_%s_sha[] = "%s";\n' '$*' \
	    "$$(sha1sum < $< | cut -c1-40)"; \
	  echo 'const char script_$*_body[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; \
	  echo ';'; } > $@

$(B)/scripts/%_lua.o: $(B)/scripts/%_lua.c $(B)/.flags
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -Wno-missing-variable-declarations \
	    -c -o $@ $<

# Unit tests link against archives: only the objects a test uses come in.
$(B)/libshim.a: $(SHIM_LIB)
	$(AR) rcs $@ $^
$(B)/libalerter.a: $(ALERTER_LIB)
	$(AR) rcs $@ $^
$(B)/libcommon.a: $(COMMON_OBJ)
	$(AR) rcs $@ $^

$(B)/tests/test_%: tests/unit/test_%.c $(B)/libshim.a $(B)/libalerter.a \
    $(B)/libcommon.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Ishim -Ialerter $(ALL_CFLAGS) $(LDFLAGS) -o $@ $(filter %.c %.a,$^) \
	    $(PKG_LIBS) -lev

# What the integration tests ask the real code rather than re-implement.
$(B)/tests/keyname: tests/unit/keyname.c $(B)/libcommon.a
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(B)/libcommon.a \
	    $(PKG_LIBS) -lev

deps:
	@sh deploy/install-deps.sh $(RUN_DEBS)

deps-test:
	@sh deploy/install-deps.sh $(TEST_DEBS)

run: deps
	@$(MAKE) --no-print-directory all
	@sh deploy/run-local.sh

unit: $(UNIT_BIN)
	@sh tests/run-unit.sh $(UNIT_BIN)

integration: all $(B)/tests/keyname
	/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration

test: deps-test
	@$(MAKE) --no-print-directory all $(UNIT_BIN) $(B)/tests/keyname
	@SW_SAN=$(SAN) sh tests/run-all.sh $(UNIT_BIN)

bench: deps
	@$(MAKE) --no-print-directory all
	@bash tests/bench/run.sh
	@/usr/bin/python3 tests/bench/cluster_bench.py
	@/usr/bin/python3 tests/bench/alert_latency.py -n 50

# libFuzzer on the request parser and the config loader, for longer.
fuzz: deps-test
	@FUZZ_SECONDS=$${FUZZ_SECONDS:-300} sh tests/fuzz/run.sh

# The shim under valgrind through faults and bad input; then the whole
# integration suite with both daemons under valgrind.
valgrind: deps-test
	@$(MAKE) --no-print-directory all $(B)/tests/keyname
	@sh tests/valgrind.sh
	@SW_VALGRIND=1 /usr/bin/python3 -m pytest -q -p no:cacheprovider \
	    tests/integration

clean:
	rm -rf $(B)

# Only our own object directories: build/ also caches other things (the
# unpacked Postfix the tests run), whose *.d are not dependency files.
-include $(wildcard $(addprefix $(B)/,$(addsuffix /*.d,common shim alerter \
	    scripts tests tests/fuzz)))
