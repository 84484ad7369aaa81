#pragma once
//! \file
//! How far a compressed cache's attention output is from the full cache's: the measure the examples and
//! the tests report.

#include <cmath>
#include <cstddef>
#include <span>

namespace planted {

//! Relative L2 error `||output - reference|| / ||reference||`, accumulated in double; 0 for equal inputs.
inline double relative_error(std::span<const float> output, std::span<const float> reference) {
    double difference = 0.0, norm = 0.0;
    for (std::size_t i = 0; i < reference.size(); ++i) {
        const double d = static_cast<double>(output[i]) - static_cast<double>(reference[i]);
        difference += d * d;
        norm += static_cast<double>(reference[i]) * static_cast<double>(reference[i]);
    }
    return norm > 0.0 ? std::sqrt(difference / norm) : std::sqrt(difference);
}

}  // namespace planted
