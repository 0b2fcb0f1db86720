#![allow(dead_code)]

use dagger::prelude::*;

#[step]
struct Build;

fn main() {}
