// One include for Catch2 v2 (single header) and v3 (split headers). CMake defines DSA_CATCH_MAJOR from the
// package it found; without it, the headers present decide.
#pragma once

#if !defined(DSA_CATCH_MAJOR)
#  if __has_include(<catch2/catch_test_macros.hpp>)
#    define DSA_CATCH_MAJOR 3
#  else
#    define DSA_CATCH_MAJOR 2
#  endif
#endif

#if DSA_CATCH_MAJOR >= 3
#  include <catch2/catch_session.hpp>
#  include <catch2/catch_test_macros.hpp>
#  include <catch2/generators/catch_generators.hpp>
#  include <catch2/generators/catch_generators_range.hpp>
#else
#  include <catch2/catch.hpp>  // CATCH_CONFIG_RUNNER, defined by test_main.cpp only, adds the implementation
#endif
