# blockd — build, run, test.  `make run` and `make test` are all a new
# machine needs: both install missing Debian packages first.

CC       ?= cc
BUILD    ?= build
SANITIZER ?=
OPT      ?= -O2

# Plain -l flags rather than pkg-config: on a new machine the Makefile is
# read before the packages are installed.
CFLAGS   := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
            $(OPT) -g -pthread -I.
LDFLAGS  := -pthread
ifneq ($(SANITIZER),)
  CFLAGS  += -fsanitize=$(SANITIZER) -fno-omit-frame-pointer -fno-sanitize-recover=all
  LDFLAGS += -fsanitize=$(SANITIZER)
  BUILD   := build/san
endif

LIBS_D   := -luring -ljson-c -lmicrohttpd -lrocksdb -luuid -lisal
LIBS_C   := -ljson-c -lcurl

COMMON_SRC := $(wildcard common/*.c)
NBD_SRC    := $(wildcard nbd/*.c)
VOL_SRC    := $(wildcard volume/*.c)
BLOCKD_SRC := $(wildcard blockd/*.c)
CLIENT_SRC := $(wildcard client/*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

.PHONY: all binaries run test unit integration deps clean bench check-long fuzz
all: deps
	@$(MAKE) --no-print-directory binaries
binaries: $(BUILD)/blockd $(BUILD)/blockctl

deps:
	@sh scripts/install-deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/blockd: $(call obj,$(COMMON_SRC) $(NBD_SRC) $(VOL_SRC) $(BLOCKD_SRC))
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_D)

$(BUILD)/blockctl: $(call obj,$(COMMON_SRC) $(CLIENT_SRC))
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $^ $(LIBS_C)

# ---- unit tests (Criterion): tests/unit/test-MODULE.c links MODULE's objects
UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test-*.c))
$(BUILD)/tests/test-nbd: $(call obj,tests/unit/test-nbd.c $(NBD_SRC) $(COMMON_SRC))
$(BUILD)/tests/test-volume: $(call obj,tests/unit/test-volume.c $(VOL_SRC) $(COMMON_SRC))
$(BUILD)/tests/test-common: $(call obj,tests/unit/test-common.c $(COMMON_SRC))
$(BUILD)/tests/%:
	@mkdir -p $(dir $@)
	@echo "  LD      $@"
	@$(CC) $(LDFLAGS) -o $@ $^ -lcriterion $(LIBS_D)

unit: deps
	@$(MAKE) --no-print-directory binaries $(UNIT_TESTS)
	@set -e; for t in $(UNIT_TESTS); do echo "== $$t"; $$t --jobs 1; done

integration: all
	@BUILD=$(BUILD) sh tests/run-integration.sh $(T)

test: unit integration

check-long: all
	@ITERATIONS=50 BUILD=$(BUILD) sh tests/run-integration.sh test-kill9

run: all
	@mkdir -p var/blockd
	exec $(BUILD)/blockd --data-dir var/blockd

bench: all
	@BUILD=$(BUILD) sh fio-jobs/bench.sh

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
