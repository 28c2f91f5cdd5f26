//! Internal macros.

/// `get_ref`, `get_mut` and `into_inner` for a service with an `inner` field.
macro_rules! inner_service_accessors {
    ($name:ident < S $(, $p:ident)* >) => {
        impl<S $(, $p: ?Sized)*> $name<S $(, $p)*> {
            /// The wrapped service.
            pub fn get_ref(&self) -> &S {
                &self.inner
            }

            /// The wrapped service, mutably.
            pub fn get_mut(&mut self) -> &mut S {
                &mut self.inner
            }

            /// Unwraps the wrapped service.
            pub fn into_inner(self) -> S {
                self.inner
            }
        }
    };
}

pub(crate) use inner_service_accessors;
