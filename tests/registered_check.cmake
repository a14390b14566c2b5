# Every GoogleTest test in a test binary is run by one of its CTest tests: the binary's full test list equals
# its list under the union of the CTest tests' filters (a TEST macro the filter scan in tests/CMakeLists.txt
# missed would otherwise never run). Run as: cmake -DBINARY=... -DFILTER=... -P registered_check.cmake
execute_process(COMMAND ${BINARY} --gtest_list_tests OUTPUT_VARIABLE all RESULT_VARIABLE rc1)
execute_process(COMMAND ${BINARY} --gtest_list_tests "--gtest_filter=${FILTER}" OUTPUT_VARIABLE run
  RESULT_VARIABLE rc2)
if(NOT rc1 EQUAL 0 OR NOT rc2 EQUAL 0)
  message(FATAL_ERROR "${BINARY} --gtest_list_tests failed (${rc1}, ${rc2})")
endif()
if(NOT all STREQUAL run)
  message(FATAL_ERROR "${BINARY}: tests no CTest test runs (tests/CMakeLists.txt, cpd_add_test).\n"
    "All:\n${all}\nRun by the CTest tests:\n${run}")
endif()
string(REGEX MATCHALL "\n  " tests "${all}")
list(LENGTH tests n)
message(STATUS "${BINARY}: all ${n} tests are run by its CTest tests")
