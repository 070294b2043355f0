# ctest fuzz_<name>: replays the inputs of REGRESSIONS (each once: the
# bugs found so far), then runs the fuzzer for SECONDS from its seeds. Any crash,
# leak, sanitizer report or timeout fails the test; libFuzzer leaves the input
# in ARTIFACTS (its path is printed) to turn into a regression test.
#   cmake -D FUZZER=... -D CORPUS=... -D SEEDS=... [-D EXTRA=dir;dir] -D SECONDS=25
#         -D ARTIFACTS=dir/ [-D REGRESSIONS=dir] -P run_fuzzer.cmake
file(MAKE_DIRECTORY "${CORPUS}" "${ARTIFACTS}")
if(REGRESSIONS)
  file(GLOB regressions "${REGRESSIONS}/*")
  if(regressions)
    execute_process(COMMAND ${FUZZER} -runs=1 ${regressions} RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "${FUZZER} fails again on a regression input of ${REGRESSIONS} "
                          "(exit ${rc})")
    endif()
  endif()
endif()
file(GLOB seeds "${SEEDS}/*")
if(seeds)
  file(COPY ${seeds} DESTINATION "${CORPUS}")
endif()
set(dirs "${CORPUS}")
foreach(d ${EXTRA})
  if(d)
    list(APPEND dirs "${d}")
  endif()
endforeach()
execute_process(
  COMMAND ${FUZZER} -max_total_time=${SECONDS} -timeout=10 -rss_limit_mb=2048
          -max_len=65536 -print_final_stats=1 -artifact_prefix=${ARTIFACTS} ${dirs}
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${FUZZER} found a failing input (exit ${rc}); see ${ARTIFACTS}")
endif()
