# Installs web/node_modules from package-lock.json when it is missing or older
# than the lock file (scripts/install-deps.sh normally did it already).
# Usage: cmake -DWEB_DIR=<web> -DNPM=<npm> -P npm_ci.cmake
set(stamp "${WEB_DIR}/node_modules/.package-lock.json")
if(EXISTS "${stamp}" AND NOT "${WEB_DIR}/package-lock.json" IS_NEWER_THAN "${stamp}")
  return()
endif()
execute_process(COMMAND "${NPM}" ci --no-audit --no-fund --loglevel=error
                WORKING_DIRECTORY "${WEB_DIR}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "npm ci failed in ${WEB_DIR} (exit ${rc})")
endif()
