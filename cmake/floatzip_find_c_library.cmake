# floatzip_find_c_library(<package> <header> <library> <version_macro_prefix>)
#
# Shared body of the find modules for plain C libraries that ship a header and a library but no
# CMake package everywhere. Sets <package>_FOUND, <package>_VERSION (read from the header's
# <prefix>_MAJOR/_MINOR/_RELEASE macros), <package>_INCLUDE_DIR, <package>_LIBRARY, and creates
# the imported target <package>::<package>. Hints: <package>_ROOT or CMAKE_PREFIX_PATH.
include(FindPackageHandleStandardArgs)

macro(floatzip_find_c_library package header library version_prefix)
  find_path(${package}_INCLUDE_DIR NAMES ${header})
  find_library(${package}_LIBRARY NAMES ${library} lib${library})

  if(${package}_INCLUDE_DIR AND EXISTS "${${package}_INCLUDE_DIR}/${header}")
    file(STRINGS "${${package}_INCLUDE_DIR}/${header}" _floatzip_version_lines
         REGEX "^#define ${version_prefix}_(MAJOR|MINOR|RELEASE) +[0-9]+")
    set(${package}_VERSION "")
    foreach(_floatzip_part MAJOR MINOR RELEASE)
      string(REGEX REPLACE ".*#define ${version_prefix}_${_floatzip_part} +([0-9]+).*" "\\1"
                           _floatzip_number "${_floatzip_version_lines}")
      list(APPEND ${package}_VERSION ${_floatzip_number})
    endforeach()
    list(JOIN ${package}_VERSION "." ${package}_VERSION)
  endif()

  find_package_handle_standard_args(
    ${package}
    REQUIRED_VARS ${package}_LIBRARY ${package}_INCLUDE_DIR
    VERSION_VAR ${package}_VERSION)
  mark_as_advanced(${package}_INCLUDE_DIR ${package}_LIBRARY)

  if(${package}_FOUND AND NOT TARGET ${package}::${package})
    add_library(${package}::${package} UNKNOWN IMPORTED)
    set_target_properties(
      ${package}::${package} PROPERTIES IMPORTED_LOCATION "${${package}_LIBRARY}"
                                        INTERFACE_INCLUDE_DIRECTORIES "${${package}_INCLUDE_DIR}")
  endif()
endmacro()
