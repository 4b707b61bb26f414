//! Compile errors for misuse of `#[cached]`: each says what is wrong and what to write instead.

#[test]
fn misuse_is_a_compile_error_that_says_what_to_do() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
