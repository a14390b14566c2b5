# Install rules and the Debian package (CPack DEB): what `cmake --install` and `make package` produce.
# docs/install.md is the technician's side of this file.

# cpack (and `make install`) would otherwise build the whole tree, tests and benches included, before
# packaging: `make package` builds first anyway, and the package test must not rebuild everything.
set(CMAKE_SKIP_INSTALL_ALL_DEPENDENCY ON)

# Binaries: <prefix>/bin, so /usr/bin in the package.
install(TARGETS checkpointd checkpointctl RUNTIME DESTINATION bin)

install(FILES README.md docs/install.md docs/configuration.md docs/records.md
  DESTINATION share/doc/checkpointd)

# The unit and the example config belong in /lib/systemd/system and /etc/checkpointd when installed for
# the system (prefix /usr, as CPack does: it installs with prefix /usr and DESTDIR=<staging dir>), but
# under the prefix for any other one, so that `cmake --install build --prefix /tmp/x` never writes to
# the real /etc. The destination therefore depends on the prefix given at install time, not at configure
# time, which install(FILES DESTINATION) cannot express; file(INSTALL) still honours DESTDIR and the
# install manifest. This is GNUInstallDirs' rule for sysconfdir (prefix /usr -> /etc) applied at install
# time.
set(CPD_UNIT_FILE "${PROJECT_SOURCE_DIR}/systemd/checkpointd.service")
set(CPD_EXAMPLE_CONFIG "${PROJECT_SOURCE_DIR}/config/example.yaml")
install(CODE "
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(cpd_unit_dir \"/lib/systemd/system\")
    set(cpd_conf_dir \"/etc/checkpointd\")
  else()
    set(cpd_unit_dir \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system\")
    set(cpd_conf_dir \"\${CMAKE_INSTALL_PREFIX}/etc/checkpointd\")
  endif()
  file(INSTALL DESTINATION \"\${cpd_unit_dir}\" TYPE FILE
    PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
    FILES \"${CPD_UNIT_FILE}\")
  file(INSTALL DESTINATION \"\${cpd_conf_dir}\" TYPE FILE
    PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
    RENAME checkpointd.yaml.example
    FILES \"${CPD_EXAMPLE_CONFIG}\")
")

# --- CPack: one .deb, checkpointd_<version>_<arch>.deb ------------------------------------------------
set(CPACK_PACKAGE_NAME checkpointd)
set(CPACK_PACKAGE_VENDOR "checkpointd project")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "edge gateway for traffic-police checkpoints")
set(CPACK_PACKAGE_DESCRIPTION
  "checkpointd reads a checkpoint's speed radars, ANPR cameras and body-worn recorder docks, joins
their measurements into signed, hash-chained evidence records (JWS, Ed25519), keeps them durably in
SQLite and forwards them over MQTT. Runs as the hardened systemd service checkpointd.service under
the system user checkpointd; checkpointctl manages keys, checks configs, verifies feeds.")
set(CPACK_PACKAGE_CONTACT "checkpointd maintainers <checkpointd@example.org>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
# Field boxes get stripped binaries (the build tree keeps the debug info).
set(CPACK_STRIP_FILES ON)

set(CPACK_DEBIAN_PACKAGE_NAME checkpointd)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CPACK_PACKAGE_CONTACT}")
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://example.org/checkpointd")
# Library dependencies come from dpkg-shlibdeps; adduser is what postinst creates the user with.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# The evidence sheet (checkpointctl sheet) shapes Chinese text with this font (found through fontconfig).
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser, fonts-wqy-zenhei")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  "${PROJECT_SOURCE_DIR}/packaging/debian/postinst"
  "${PROJECT_SOURCE_DIR}/packaging/debian/prerm"
  "${PROJECT_SOURCE_DIR}/packaging/debian/postrm"
  "${PROJECT_SOURCE_DIR}/packaging/debian/conffiles")
# Maintainer scripts 0755, conffiles 0644, whatever the checkout's modes are.
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
