# Shared warning and sanitizer settings, as INTERFACE targets every project target links.
add_library(cpd_project_options INTERFACE)
target_compile_options(cpd_project_options INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wold-style-cast -Wcast-align
  -Woverloaded-virtual -Wimplicit-fallthrough)
target_compile_definitions(cpd_project_options INTERFACE
  BOOST_ASIO_NO_DEPRECATED CPD_VERSION="${PROJECT_VERSION}")
if(CPD_SANITIZE)
  target_compile_options(cpd_project_options INTERFACE
    -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  target_link_options(cpd_project_options INTERFACE -fsanitize=address,undefined)
  # Tests loosen memory and timing bounds that shadow memory and instrumentation make meaningless.
  target_compile_definitions(cpd_project_options INTERFACE CPD_SANITIZED=1)
endif()

# cpd_add_library(name SOURCES ... DEPS ...): one library per component, own include dir = repo root.
function(cpd_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC cpd_project_options ${ARG_DEPS})
endfunction()
