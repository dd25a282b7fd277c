# Installs the e2e Node dependencies from package-lock.json, only when they
# are missing (scripts/install-deps.sh normally did it already).
# Usage: cmake -DDIR=<tests/e2e> -DNPM=<npm> -P npm_ci.cmake
if(EXISTS "${DIR}/node_modules/ws/package.json" AND EXISTS "${DIR}/node_modules/socket.io-client/package.json"
   AND EXISTS "${DIR}/node_modules/playwright-core/package.json" AND EXISTS "${DIR}/node_modules/axe-core/package.json")
  message(STATUS "e2e node_modules present")
  return()
endif()
execute_process(
  COMMAND "${NPM}" ci --no-audit --no-fund --loglevel=error
  WORKING_DIRECTORY "${DIR}"
  RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "npm ci failed in ${DIR} (exit ${rc})")
endif()
