# senderwatch: one GNU Makefile for both daemons, the tests and the bench.
#
#   make            build build/senderwatch-shim, build/senderwatch-alerter
#                   and build/senderwatch-ctl
#   make run        install what is missing, build, run a private Redis, the
#                   shim, the alerter and a local mail sink (quick start)
#   make test       install what tests need, run unit and integration tests
#   make bench      decisions/s, latency, CPU and memory: the shim against a floor
#                   server, one Redis against a Cluster, alert latency
#   make install    the binaries, man pages, units, sysusers file, monit
#                   check, Exim snippets, Redis ACLs, the Grafana dashboard
#                   and a commented config (never over an existing one);
#                   PREFIX, DESTDIR, sbindir, sysconfdir, mandir, datadir
#   make uninstall  all of that but the config
#   make SAN=1 ...  the same with AddressSanitizer and UBSan
#   make clean

VERSION	:= 0.1.0
B	:= build

PKGS	:= hiredis yaml-0.1 libcurl libmicrohttpd
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
# A missing -dev package: say which, rather than a compiler error.
ifeq ($(filter deps deps-test run test bench fuzz valgrind clean uninstall,$(MAKECMDGOALS)),)
ifneq ($(shell pkg-config --exists $(PKGS) && echo ok),ok)
$(error pkg-config cannot find all of "$(PKGS)": run `make deps` (Debian: \
	libhiredis-dev libyaml-dev libcurl4-openssl-dev libmicrohttpd-dev))
endif
endif

PREFIX	?= /usr/local
sbindir	?= $(PREFIX)/sbin
mandir	?= $(PREFIX)/share/man
datadir	?= $(PREFIX)/share
# The config path is compiled in; Debian's /etc unless told.
sysconfdir ?= /etc
unitdir	?= /lib/systemd/system
sysusersdir ?= /usr/lib/sysusers.d
INSTALL	?= install
CPPFLAGS += -D_GNU_SOURCE -DSW_VERSION='"$(VERSION)"' \
	    -DSW_SYSCONFDIR='"$(sysconfdir)"' -Icommon -I$(B)
ALL_CFLAGS = -std=c11 $(WARN) $(CFLAGS) $(PKG_CFLAGS) -MMD -MP

COMMON_SRC	:= $(wildcard common/*.c)
SHIM_SRC	:= $(wildcard shim/*.c)
ALERTER_SRC	:= $(wildcard alerter/*.c)
# senderwatch-ctl: an admin tool on the daemons' own common code.
CTL_SRC		:= $(wildcard common/ctl/*.c)

LUA_SRC		:= $(wildcard scripts/*.lua)
LUA_OBJ		:= $(LUA_SRC:scripts/%.lua=$(B)/scripts/%_lua.o)
COMMON_OBJ	:= $(COMMON_SRC:%.c=$(B)/%.o) $(LUA_OBJ)
SHIM_OBJ	:= $(SHIM_SRC:%.c=$(B)/%.o)
ALERTER_OBJ	:= $(ALERTER_SRC:%.c=$(B)/%.o)
CTL_OBJ		:= $(CTL_SRC:%.c=$(B)/%.o)
# Everything but main.c, for the unit tests to link against.
SHIM_LIB	:= $(filter-out $(B)/shim/main.o,$(SHIM_OBJ))
ALERTER_LIB	:= $(filter-out $(B)/alerter/main.o,$(ALERTER_OBJ))

UNIT_SRC	:= $(wildcard tests/unit/test_*.c)
UNIT_BIN	:= $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)

BINS := $(B)/senderwatch-shim
ifneq ($(ALERTER_SRC),)
BINS += $(B)/senderwatch-alerter
endif
ifneq ($(CTL_SRC),)
BINS += $(B)/senderwatch-ctl
endif
MANS := $(wildcard deploy/man/*.[58])

# Debian packages: what running needs, and what the tests add.
RUN_DEBS  := build-essential pkg-config libhiredis-dev libev-dev \
	     libyaml-dev libcurl4-openssl-dev libmicrohttpd-dev redis-server \
	     redis-tools python3 python3-aiosmtpd
# Postfix conflicts with exim4, so the tests run it unpacked from its .deb
# (tests/integration/postfix.py): only its libraries are installed.
TEST_DEBS := $(RUN_DEBS) exim4-daemon-light python3-pytest systemd monit \
	     valgrind clang libclang-rt-14-dev openssl swaks libdb5.3 \
	     libicu72 libnsl2 libsasl2-2 libssl3 redis-sentinel mandoc man-db \
	     prometheus

.PHONY: all deps deps-test run test unit integration bench fuzz valgrind clean \
	install uninstall FORCE

all: $(BINS)

$(B)/senderwatch-shim: $(SHIM_OBJ) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $(filter-out %.h,$^) $(PKG_LIBS) -lev

$(B)/senderwatch-alerter: $(ALERTER_OBJ) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $(filter-out %.h,$^) $(PKG_LIBS) -lev

$(B)/senderwatch-ctl: $(CTL_OBJ) $(COMMON_OBJ)
	$(CC) $(LDFLAGS) -o $@ $(filter-out %.h,$^) $(PKG_LIBS) -lev

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

# Kept: the objects' .d files name them, and make would otherwise delete
# and regenerate them (relinking everything) on every run.
.SECONDARY: $(LUA_OBJ:.o=.c)

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
	@$(MAKE) --no-print-directory all $(B)/sw-bench
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

# Installed as a daemon's files are: the config only when there is none
# (an admin's edits are never overwritten; the new default goes beside it
# as config.yaml.dist), the runtime directories left to systemd.
DIST_CONF = $(DESTDIR)$(sysconfdir)/senderwatch/config.yaml
install: all
	$(INSTALL) -d $(DESTDIR)$(sbindir) $(DESTDIR)$(mandir)/man5 \
	    $(DESTDIR)$(mandir)/man8 $(DESTDIR)$(sysconfdir)/senderwatch \
	    $(DESTDIR)$(unitdir) $(DESTDIR)$(sysusersdir) \
	    $(DESTDIR)$(datadir)/senderwatch/exim \
	    $(DESTDIR)$(datadir)/senderwatch/monit \
	    $(DESTDIR)$(datadir)/senderwatch/redis \
	    $(DESTDIR)$(datadir)/senderwatch/grafana \
	    $(DESTDIR)$(datadir)/senderwatch/scripts
	$(INSTALL) -m 0755 $(BINS) $(DESTDIR)$(sbindir)/
	$(INSTALL) -m 0644 $(filter %.5,$(MANS)) $(DESTDIR)$(mandir)/man5/
	$(INSTALL) -m 0644 $(filter %.8,$(MANS)) $(DESTDIR)$(mandir)/man8/
	for u in shim alerter; do \
	    sed 's,/usr/local/sbin/,$(sbindir)/,g; s,/etc/senderwatch/,$(sysconfdir)/senderwatch/,g' \
	        deploy/senderwatch-$$u.service > $(DESTDIR)$(unitdir)/senderwatch-$$u.service && \
	    chmod 0644 $(DESTDIR)$(unitdir)/senderwatch-$$u.service || exit 1; \
	done
	$(INSTALL) -m 0644 deploy/senderwatch.sysusers \
	    $(DESTDIR)$(sysusersdir)/senderwatch.conf
	$(INSTALL) -m 0644 deploy/exim/* $(DESTDIR)$(datadir)/senderwatch/exim/
	$(INSTALL) -m 0644 deploy/monit/* $(DESTDIR)$(datadir)/senderwatch/monit/
	$(if $(wildcard deploy/redis/*),$(INSTALL) -m 0644 $(wildcard deploy/redis/*) \
	    $(DESTDIR)$(datadir)/senderwatch/redis/)
	$(if $(wildcard deploy/grafana/*),$(INSTALL) -m 0644 $(wildcard deploy/grafana/*) \
	    $(DESTDIR)$(datadir)/senderwatch/grafana/)
	$(INSTALL) -m 0644 scripts/*.lua $(DESTDIR)$(datadir)/senderwatch/scripts/
	$(INSTALL) -m 0644 config.yaml $(DIST_CONF).dist
	@# 0640 to the daemons' group (it may hold a password; SIGHUP reads it
	@# after the privilege drop), when systemd-sysusers has made it.
	test -e $(DIST_CONF) || $(INSTALL) -m 0640 $$(getent group senderwatch \
	    >/dev/null && [ "$$(id -u)" = 0 ] && echo -g senderwatch) \
	    config.yaml $(DIST_CONF)

uninstall:
	rm -f $(addprefix $(DESTDIR)$(sbindir)/,$(notdir $(BINS))) \
	    $(addprefix $(DESTDIR)$(mandir)/man5/,$(notdir $(filter %.5,$(MANS)))) \
	    $(addprefix $(DESTDIR)$(mandir)/man8/,$(notdir $(filter %.8,$(MANS)))) \
	    $(DESTDIR)$(unitdir)/senderwatch-shim.service \
	    $(DESTDIR)$(unitdir)/senderwatch-alerter.service \
	    $(DESTDIR)$(sysusersdir)/senderwatch.conf $(DIST_CONF).dist
	rm -rf $(DESTDIR)$(datadir)/senderwatch
	@test ! -e $(DIST_CONF) || echo "uninstall: $(DIST_CONF) kept (yours)"

# Only our own object directories: build/ also caches other things (the
# unpacked Postfix the tests run), whose *.d are not dependency files.
-include $(wildcard $(addprefix $(B)/,$(addsuffix /*.d,common common/ctl shim \
	    alerter scripts tests tests/fuzz)))
