# ctest fuzz_build: configures (once) and builds the fuzz project with clang.
#   cmake -D SRC=tests/fuzz -D BIN=<dir> -D CXX=<clang++> [-D PREFIX=<paths>] -P build_fuzzers.cmake
string(REPLACE "|" ";" PREFIX "${PREFIX}")  # CMakeLists.txt's list separator
if(NOT EXISTS "${BIN}/CMakeCache.txt")
  execute_process(
    COMMAND ${CMAKE_COMMAND} -S ${SRC} -B ${BIN} -DCMAKE_CXX_COMPILER=${CXX}
            -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_PREFIX_PATH=${PREFIX}"
    RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    file(REMOVE "${BIN}/CMakeCache.txt")
    message(FATAL_ERROR "configuring the fuzzers with ${CXX} failed (${rc})")
  endif()
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BIN} -j2 RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the fuzzers failed (${rc})")
endif()
