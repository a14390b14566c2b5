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

# cpd_add_library(name SOURCES ... DEPS ...): one library per component. Its include directory is a view of
# the source tree holding only its own folder (a symlink in the build tree), so `#include "daemon/core/x.h"`
# keeps its path while a component sees only the headers of itself and of the components it links: an
# include of anything else fails to compile (the layering in docs/architecture.md).
function(cpd_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  file(RELATIVE_PATH folder ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR})
  set(view ${PROJECT_BINARY_DIR}/include-views/${folder})
  get_filename_component(parent ${view}/${folder} DIRECTORY)
  file(MAKE_DIRECTORY ${parent})
  file(CREATE_LINK ${CMAKE_CURRENT_SOURCE_DIR} ${view}/${folder} SYMBOLIC)
  target_include_directories(${name} PUBLIC ${view})
  target_link_libraries(${name} PUBLIC cpd_project_options ${ARG_DEPS})
endfunction()

# cpd_add_headers(name HEADERS ... DEPS ...): a header-only component (the adapter API, the device settings):
# its view holds just these files (paths relative to the current folder).
function(cpd_add_headers name)
  cmake_parse_arguments(ARG "" "" "HEADERS;DEPS" ${ARGN})
  add_library(${name} INTERFACE)
  file(RELATIVE_PATH folder ${PROJECT_SOURCE_DIR} ${CMAKE_CURRENT_SOURCE_DIR})
  set(view ${PROJECT_BINARY_DIR}/include-views/headers/${name})
  file(MAKE_DIRECTORY ${view}/${folder})
  foreach(header ${ARG_HEADERS})
    get_filename_component(sub ${view}/${folder}/${header} DIRECTORY)
    file(MAKE_DIRECTORY ${sub})
    file(CREATE_LINK ${CMAKE_CURRENT_SOURCE_DIR}/${header} ${view}/${folder}/${header} SYMBOLIC)
  endforeach()
  target_include_directories(${name} INTERFACE ${view})
  target_link_libraries(${name} INTERFACE cpd_project_options ${ARG_DEPS})
endfunction()
